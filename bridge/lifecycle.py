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

from bridge.errors import IllegalTransition

ACTIONS = ("publish", "deprecate", "retire", "block", "unblock")

# The states in which applications see an API (CONTRACT §4): CREATED is not there yet and
# RETIRED no more (both 404); a BLOCKED API is found, then refused with 503.
VISIBLE_STATES = frozenset({"PUBLISHED", "DEPRECATED", "BLOCKED"})

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


def allowed_actions(state: str) -> list[str]:
    """The actions that lead somewhere from ``state``, in ACTIONS order."""
    return [a for a in ACTIONS if (state, a) in _TRANSITIONS]


def transition(state: str, action: str) -> str:
    """The state after ``action``, or IllegalTransition (409 at the management API)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    target = _TRANSITIONS.get((state, action))
    if target is None:
        raise IllegalTransition(state, action, allowed=sorted(allowed_actions(state)))
    return target
