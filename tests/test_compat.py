"""Arguments with no effect here are recorded and named in one warning, never dropped."""

from __future__ import annotations

import warnings

import pytest

from clearnb.compat import unused_arguments, warn_unused
from clearnb.errors import CompatibilityWarning


def serialize(value: object) -> bytes:
    return repr(value).encode()


def test_only_arguments_given_away_from_their_default_are_recorded() -> None:
    given = {"docker": "python:3.11", "repo": None, "auto_version_bump": False, "hook": serialize}
    recorded = unused_arguments(given, {"auto_version_bump": False})
    assert recorded == {"docker": "python:3.11", "hook": "serialize"}


def test_values_are_recorded_as_json() -> None:
    recorded = unused_arguments({"packages": ("numpy", "pandas"), "odd": object})
    assert recorded["packages"] == ["numpy", "pandas"]
    assert recorded["odd"] == "object"


def test_one_warning_names_every_unused_argument_and_why() -> None:
    with pytest.warns(CompatibilityWarning) as caught:
        warn_unused("Task.init", {"docker": "img", "repo": "git@x"}, "no containers here")
    (warning,) = caught
    assert str(warning.message) == (
        "Task.init: docker='img', repo='git@x' recorded but not used: no containers here"
    )


def test_nothing_is_said_when_nothing_was_given() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_unused("Task.init", {}, "never shown")
