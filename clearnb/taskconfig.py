"""A task's configuration objects, as ClearML's ``connect_configuration`` keeps them.

Part of :class:`clearnb.task.Task`. A configuration object is a named text stored with the
task: a dict (or list) as JSON, or the content of a configuration file. As in ClearML, it
can be overridden for a run: code run by hand records what it connects, while a run (the
kernel clearnb runs a task in) uses what its task carries: first the overrides in its runtime
(:data:`OVERRIDES_KEY`, ``{name: dict or text}``, as a pipeline step's
``configuration_overrides``), then the configuration objects its task holds (copied from
its template or clone source, or set with :meth:`~ConfigurationObjects.set_configuration_object`).
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
from collections.abc import Mapping, MutableMapping, MutableSequence
from pathlib import Path
from typing import Any, TypeVar, cast

from clearnb import current
from clearnb.connected import ConnectedSections
from clearnb.errors import ConfigurationObjectError
from clearnb.taskfacts import TaskFacts

__all__ = ["DEFAULT_NAME", "OVERRIDES_KEY", "ConfigurationObjects", "config_from_text"]

DEFAULT_NAME = "General"
"""The name of a configuration object connected without one, as in ClearML."""
OVERRIDES_KEY = "configuration_overrides"
"""Key of a task's ``runtime`` holding configuration objects that override, for its run,
those the notebook connects: ``{name: dict, list or text}``."""
DICTIONARY = "dictionary"
"""The type of a configuration object connected as a dict or list."""

C = TypeVar("C")


def config_from_text(text: str, name: str = DEFAULT_NAME) -> Any:
    """The dict (or list) a configuration object's text holds: JSON, else YAML (when
    PyYAML is installed). Text that is neither raises :class:`ConfigurationObjectError`."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        yaml = importlib.import_module("yaml")  # optional: PyYAML comes with Jupyter
    except ImportError:  # pragma: no cover
        yaml = None
    if yaml is not None:
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            parsed = None
        if isinstance(parsed, dict | list):
            return parsed
    raise ConfigurationObjectError(
        f"Configuration object {name!r} is neither JSON nor YAML, so it cannot be read as a "
        "dict; read its text with task.get_configuration_object(name).",
        name=name,
    )


def _text_of(value: Any) -> str:
    """The stored text of a dict or list (JSON), or of text given as it is."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, default=str)


class ConfigurationObjects(TaskFacts):
    """``connect_configuration`` and the ``*_configuration_object*`` methods of a task."""

    def __init__(self) -> None:
        super().__init__()
        self._configuration_dicts = ConnectedSections()

    def connect_configuration(
        self,
        configuration: C,
        name: str | None = None,
        description: str | None = None,
        ignore_remote_overrides: bool = False,
    ) -> C:
        """Connect a configuration (a dict or list, or the path of a configuration file)
        as configuration object ``name`` (``General`` by default), stored with the task.

        A dict or list is returned; in a run whose task carries an override of ``name``, it
        is first changed in place to the override. A path is returned as it is, or in such
        a run the path of a local file holding the override (a new temporary file unless
        the given file holds it already). Changes made to a returned dict later are
        recorded too. With ``ignore_remote_overrides`` the run uses what the code connects.
        """
        name = name or DEFAULT_NAME
        override = None if ignore_remote_overrides else self._override(name)
        if isinstance(configuration, MutableMapping | MutableSequence):
            if override is not None:
                self._apply(configuration, config_from_text(_text_of(override), name), name)
            self._store(name, _text_of(configuration), DICTIONARY, description)
            if isinstance(configuration, MutableMapping):
                self._configuration_dicts.add(name, configuration)
            return configuration
        if not isinstance(configuration, str | os.PathLike):
            raise ConfigurationObjectError(
                "connect_configuration takes a dict, a list or the path of a configuration "
                f"file (str or pathlib.Path), not {type(configuration).__name__}",
                name=name,
            )
        path = Path(configuration)
        kind = path.suffix.lstrip(".") or "file"
        if override is None:
            self._store(name, _read(path, name), kind, description)
            return configuration
        text = _text_of(override)
        self._store(name, text, kind, description)
        if path.is_file() and _read(path, name) == text:
            return configuration
        local = _write_temporary(text, path.suffix or ".txt")
        if isinstance(configuration, str):
            return cast(C, local)
        kind_of_path = type(configuration) if isinstance(configuration, Path) else Path
        return cast(C, kind_of_path(local))

    def get_configuration_object(self, name: str) -> str | None:
        """The text of configuration object ``name``, or None if the task has none."""
        self.flush()
        item = self.reload().record.configuration.get(name)
        return None if item is None else str(item.get("value", ""))

    def get_configuration_object_as_dict(self, name: str) -> Any:
        """Configuration object ``name`` read as a dict (or list): JSON or YAML text; None
        if the task has no such object (or an empty one)."""
        text = self.get_configuration_object(name)
        return config_from_text(text, name) if text else None

    def get_configuration_objects(self) -> dict[str, str]:
        """The text of every configuration object of the task, by name."""
        self.flush()
        return {
            name: str(item.get("value", ""))
            for name, item in self.reload().record.configuration.items()
        }

    def set_configuration_object(
        self,
        name: str,
        config_text: str | None = None,
        description: str | None = None,
        config_type: str | None = None,
        config_dict: Mapping[str, Any] | list[Any] | None = None,
    ) -> None:
        """Store configuration object ``name`` as ``config_text``, or ``config_dict``
        encoded as JSON (one of the two); a run of this task then uses it."""
        if (config_text is None) == (config_dict is None):
            raise ConfigurationObjectError(
                "set_configuration_object takes config_text=... or config_dict=..., one of the two",
                name=name,
            )
        text = config_text if config_text is not None else _text_of(config_dict)
        kind = config_type or (DICTIONARY if config_dict is not None else None)
        self._store(name, text, kind, description)

    def flush(self, wait: bool = False) -> bool:
        """Record the connected configuration dicts changed since they were connected."""
        for name, values in self._configuration_dicts.changed().items():
            item = self.record.configuration.get(name, {})
            self._store(name, _text_of(values), DICTIONARY, item.get("description"))
        return True

    def _override(self, name: str) -> Any:
        """What a run of this task uses as configuration object ``name``, or None where the
        code's own configuration is recorded (not in this task's run, or no override)."""
        if current.attached_task_id() != self.id:
            return None  # a task started by hand, or one this process does not run
        record = self.reload().record
        given = record.runtime.get(OVERRIDES_KEY) or {}
        if name in given:
            return given[name]
        stored = record.configuration.get(name)
        return None if stored is None else stored.get("value")

    def _store(self, name: str, text: str, kind: str | None, description: str | None) -> None:
        item = {"name": name, "value": text, "type": kind, "description": description}
        self.backend.store.set_configuration(self.id, {name: item})
        self.reload()

    @staticmethod
    def _apply(configuration: Any, override: Any, name: str) -> None:
        """Make ``configuration`` (a dict or list) the ``override`` in place."""
        if isinstance(configuration, MutableMapping) and isinstance(override, Mapping):
            configuration.clear()
            configuration.update(override)
        elif isinstance(configuration, MutableSequence) and isinstance(override, list):
            configuration[:] = override
        else:
            raise ConfigurationObjectError(
                f"The override of configuration object {name!r} is a "
                f"{type(override).__name__}, but the notebook connects a "
                f"{type(configuration).__name__}; give the override the same shape.",
                name=name,
            )


def _read(path: Path, name: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationObjectError(
            f"Could not connect configuration file {str(path)!r} as {name!r}: {exc}. Pass "
            "the path of a readable text file, or a dict.",
            name=name,
            path=str(path),
        ) from exc


def _write_temporary(text: str, suffix: str) -> str:
    """A new private file holding ``text``; its path."""
    descriptor, path = tempfile.mkstemp(prefix="clearnb_config_", suffix=suffix)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(text)
    return path
