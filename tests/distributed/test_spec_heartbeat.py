"""The heartbeat settings of a shared-storage search: defaults, and the rule that ties them."""

import pytest

from taskscout.errors import SpecError
from taskscout.spec import resolve_spec


def test_defaults_leave_several_beats_of_grace() -> None:
    s = resolve_spec("builtin:planted", {"tasks": ["a"]}).search
    assert (s.heartbeat_interval, s.grace_period, s.max_retry) == (10, 60, 3)


def test_grace_period_must_be_longer_than_the_interval() -> None:
    with pytest.raises(SpecError, match=r"grace_period \(5 s\) must be longer than heartbeat_interval \(5 s\)"):
        resolve_spec("builtin:planted", {"tasks": ["a"], "search": {"heartbeat_interval": 5, "grace_period": 5}})
    ok = resolve_spec("builtin:planted", {"tasks": ["a"], "search": {"heartbeat_interval": 1, "grace_period": 3}})
    assert ok.search.grace_period == 3


def test_interval_is_checked_like_every_setting() -> None:
    with pytest.raises(SpecError, match=r"heartbeat_interval' in the flags.* must be an int in \[1, 3600\]"):
        resolve_spec("builtin:planted", {"tasks": ["a"], "search": {"heartbeat_interval": 0}})
