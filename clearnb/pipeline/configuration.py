"""Configuration objects connected to a pipeline (``pipe.connect_configuration``).

A configuration object is stored with the pipeline's Task, in its runtime under
``configuration``, by name: ``{name: {"value": ..., "type": "dictionary" | "text" |
"file", "description": ...}}`` (the same place ``Task.connect_configuration`` keeps a
task's). A dict or list is stored as its value; a file (a path) as its text.

As in ClearML, a Task that already holds an object of that name (a draft edited before
it runs, a pipeline an agent took from a queue) overrides what the code connects: a dict
or list is changed in place, a file comes back as the path of a copy of the stored text.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clearnb.config import write_private_file
from clearnb.errors import PipelineError

CONFIGURATION_KEY = "configuration"
"""Key of a Task's runtime that holds its configuration objects by name."""
DEFAULT_NAME = "General"
DICTIONARY = "dictionary"
TEXT = "text"
FILE = "file"


def entry(configuration: Any, description: str | None) -> dict[str, Any]:
    """The stored form of ``configuration`` (a dict, a list, or the path of a file)."""
    if isinstance(configuration, Mapping | list | tuple):
        try:
            value = json.loads(json.dumps(configuration))
        except (TypeError, ValueError) as exc:
            raise PipelineError(
                f"a configuration object is stored as JSON, and this one cannot be ({exc}); "
                "keep to dicts, lists, strings, numbers and booleans"
            ) from exc
        return {"value": value, "type": DICTIONARY, "description": description}
    if isinstance(configuration, str | os.PathLike):
        path = Path(configuration)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PipelineError(
                f"the configuration file {path} cannot be read ({exc}); pass the path of a "
                "text file, or a dict"
            ) from exc
        return {"value": text, "type": FILE, "description": description}
    raise PipelineError(
        "connect_configuration takes a dict, a list or the path of a file, not a "
        f"{type(configuration).__name__}"
    )


class ConnectedConfigurations:
    """The configuration objects this process connected to one pipeline, by name."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        """Where a file given by a stored configuration is written for the code to read."""
        self.entries: dict[str, dict[str, Any]] = {}

    def connect(
        self,
        runtime: Mapping[str, Any],
        configuration: Any,
        name: str | None,
        description: str | None,
    ) -> Any:
        """Record ``configuration`` as ``name`` and return what the code goes on with:
        ``configuration`` itself, or what the Task (whose ``runtime`` is given) holds for
        that name from before this process connected it."""
        name = name or DEFAULT_NAME
        given = entry(configuration, description)
        held = (runtime.get(CONFIGURATION_KEY) or {}).get(name)
        result = configuration
        if name not in self.entries and isinstance(held, Mapping) and "value" in held:
            result = self._held(configuration, held, name)
            given = {**given, "value": held["value"]}
        self.entries[name] = given
        return result

    def _held(self, configuration: Any, held: Mapping[str, Any], name: str) -> Any:
        value = held["value"]
        if isinstance(configuration, dict) and isinstance(value, Mapping):
            configuration.clear()
            configuration.update(value)
            return configuration
        if isinstance(configuration, list) and isinstance(value, list):
            configuration[:] = value
            return configuration
        if isinstance(configuration, str | os.PathLike) and isinstance(value, str):
            original = Path(configuration)
            if original.is_file() and original.read_text(encoding="utf-8") == value:
                return configuration
            digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:12]
            copy = self.folder / f"{name}-{digest}{original.suffix or '.txt'}"
            write_private_file(copy, value)
            return copy if isinstance(configuration, Path) else str(copy)
        return configuration  # the stored object is of another kind: the code's stands
