"""The API lifecycle table (CONTRACT §8): the allowed actions of each state are exactly
those transition() accepts, and a refused action names them."""

from __future__ import annotations

import pytest

from bridge.errors import IllegalTransition
from bridge.lifecycle import ACTIONS, allowed_actions, transition

STATES = ("CREATED", "PUBLISHED", "DEPRECATED", "RETIRED", "BLOCKED")


@pytest.mark.parametrize("state", STATES)
def test_allowed_actions_are_exactly_the_accepted_ones(state: str) -> None:
    allowed = allowed_actions(state)
    for action in ACTIONS:
        if action in allowed:
            assert transition(state, action) in STATES
        else:
            with pytest.raises(IllegalTransition) as refused:
                transition(state, action)
            for named in allowed:
                assert named in str(refused.value)


def test_the_table() -> None:
    assert allowed_actions("CREATED") == ["publish"]
    assert allowed_actions("PUBLISHED") == ["deprecate", "retire", "block"]
    assert allowed_actions("BLOCKED") == ["retire", "unblock"]
    assert allowed_actions("RETIRED") == []
