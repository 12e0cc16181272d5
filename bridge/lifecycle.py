"""The API lifecycle (CONTRACT §8) as a transition table, not nested ifs.

    CREATED ──publish──▶ PUBLISHED ──deprecate──▶ DEPRECATED ──retire──▶ RETIRED
                            │  ▲                      │
                          block│unblock             block
                            ▼  │                      ▼
                          BLOCKED ◀───────────────────┘

Unblock re-publishes (as an API manager's "re-publish" does); DEPRECATED may be published
again; PUBLISHED and BLOCKED may be retired directly. RETIRED is final.
"""

from __future__ import annotations

from bridge.errors import BridgeError

ACTIONS = ("publish", "deprecate", "retire", "block", "unblock")

_TRANSITIONS: dict[tuple[str, str], str] = {
    ("CREATED", "publish"): "PUBLISHED",
    ("PUBLISHED", "deprecate"): "DEPRECATED",
    ("PUBLISHED", "retire"): "RETIRED",
    ("PUBLISHED", "block"): "BLOCKED",
    ("DEPRECATED", "publish"): "PUBLISHED",
    ("DEPRECATED", "retire"): "RETIRED",
    ("DEPRECATED", "block"): "BLOCKED",
    ("BLOCKED", "retire"): "RETIRED",
    ("BLOCKED", "unblock"): "PUBLISHED",
}


class IllegalTransition(BridgeError):
    def __init__(self, state: str, action: str) -> None:
        self.state = state
        self.action = action
        allowed = sorted(a for (s, a) in _TRANSITIONS if s == state)
        hint = f" (allowed: {', '.join(allowed)})" if allowed else " (RETIRED is final)"
        super().__init__(f"cannot {action} an API in state {state}{hint}")


def transition(state: str, action: str) -> str:
    """The state after ``action``, or IllegalTransition (409 at the management API)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    target = _TRANSITIONS.get((state, action))
    if target is None:
        raise IllegalTransition(state, action)
    return target
