"""argparse arguments as the task's ``Args`` section, recorded and overridden as in ClearML.

With ``Task.init(auto_connect_arg_parser=True)`` (the default) what an
``argparse.ArgumentParser`` parses is recorded with the task of this process, one
parameter ``Args/<dest>`` per argument. In a run, the values the task holds for
``Args/<dest>`` (its template's recorded values and the step's overrides) become the
parser's defaults before it parses, so the script gets them wherever its command line says
nothing (in a run it says nothing: the script sees ``sys.argv == [script]``). A value
becomes a default typed like the argument's own default, or else as text, which argparse
converts with the argument's ``type`` as it converts a command-line string.

Parses go through a wrapper around ``ArgumentParser.parse_known_args`` (``parse_args``
calls it), put in place by the first ``Task.init`` that asks for it, or by the run of a
script step before its first cell (:func:`install`), so that a script that parses before
``Task.init`` gets its run's values too. A namespace parsed before the wrapper was in place
(``python step.py`` parsing, then calling ``Task.init``) is found in the code that called
``Task.init`` and connected then, as ClearML connects the arguments parsed last.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import sys
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, Union

from clearnb.backend import Backend
from clearnb.current import CURRENT, attached_task_id
from clearnb.errors import ParameterError
from clearnb.notebook.parameters import ARGS, DeclaredParameter, coerce
from clearnb.store import Store, TaskRecord

__all__ = ["ARGS", "ArgumentRecorder", "Selection", "connect_arguments", "install"]

Selection = Union[bool, Mapping[str, bool]]  # noqa: UP007 - an alias evaluated at run time
"""``Task.init``'s ``auto_connect_arg_parser``: all arguments or none, or per argument
(``{"name": False}`` leaves one out; ``{"*": False, "name": True}`` keeps only one)."""

RECORDER = "__clearnb_recorder__"
"""Attribute of the wrapping ``parse_known_args`` holding its :class:`ArgumentRecorder`."""

Parse = Callable[..., "tuple[argparse.Namespace, list[str]]"]


def is_selected(selection: Selection, dest: str) -> bool:
    """Whether argument ``dest`` is recorded and overridden under ``selection``."""
    if isinstance(selection, Mapping):
        if not selection:  # ClearML: an empty dictionary connects nothing
            return False
        return bool(selection.get(dest, selection.get("*", True)))
    return bool(selection)


def selects_any(selection: Selection) -> bool:
    """Whether ``selection`` connects any argument at all."""
    if isinstance(selection, Mapping):
        return bool(selection) and (
            bool(selection.get("*", True)) or any(bool(v) for v in selection.values())
        )
    return bool(selection)


class ArgumentRecorder:
    """What the wrapped ``parse_known_args`` does: override, parse, record.

    One per process, held by the wrapper itself (see :func:`install`); ``selections``
    holds each task's ``auto_connect_arg_parser`` (a run's task parses with all arguments
    until its ``Task.init`` says otherwise).
    """

    def __init__(self, original: Parse) -> None:
        self.original = original
        self.selections: dict[str, Selection] = {}
        self.parsed: weakref.WeakValueDictionary[int, argparse.Namespace] = (
            weakref.WeakValueDictionary()
        )
        """Namespaces parsed here for a task (by ``id``; a namespace is unhashable): given
        the run's values and recorded already."""
        self._local = threading.local()

    def parse(
        self,
        parser: argparse.ArgumentParser,
        args: Sequence[str] | None,
        namespace: argparse.Namespace | None,
    ) -> tuple[argparse.Namespace, list[str]]:
        """``parser.parse_known_args(args, namespace)`` for the task of this process."""
        if getattr(self._local, "parsing", False):  # a subparser: its values reach the outer
            return self.original(parser, args, namespace)
        self._local.parsing = True
        try:
            return self._parse_for_task(parser, args, namespace)
        finally:
            self._local.parsing = False

    def _parse_for_task(
        self,
        parser: argparse.ArgumentParser,
        args: Sequence[str] | None,
        namespace: argparse.Namespace | None,
    ) -> tuple[argparse.Namespace, list[str]]:
        task_id = task_of_process()
        selection = self.selections.get(task_id, True) if task_id else False
        if task_id is None or not selects_any(selection):
            return self.original(parser, args, namespace)
        store = Backend.for_config().store
        values = run_values(store.get_task(task_id), selection)
        if not values:
            result = self.original(parser, args, namespace)
        else:
            parser.set_defaults(**{k: default_for(parser, k, v) for k, v in values.items()})
            result = self._parse_with(values, parser, args, namespace)
        record(store, task_id, result[0], selection)
        self.parsed[id(result[0])] = result[0]
        return result

    def _parse_with(
        self,
        values: Mapping[str, Any],
        parser: argparse.ArgumentParser,
        args: Sequence[str] | None,
        namespace: argparse.Namespace | None,
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse with the run's ``values`` as defaults; what argparse refuses (a value it
        cannot convert, a required argument the run has no command line for) is a
        :class:`ParameterError` saying so, where argparse would only exit with status 2."""
        given = ", ".join(f"{ARGS}/{k}={v!r}" for k, v in values.items())

        def refuse(message: str) -> NoReturn:
            hint = (
                "; a run has no command line, so give such an argument a default"
                if "required" in message
                else "; give a value of the argument's type"
            )
            raise ParameterError(
                f"the run's arguments do not parse: {message} (the run gives {given}){hint}",
                reason=message,
            )

        own = vars(parser).get("error")  # argparse documents overriding error() to not exit
        setattr(parser, "error", refuse)  # noqa: B010
        try:
            return self.original(parser, args, namespace)
        finally:
            if own is None:
                delattr(parser, "error")
            else:
                setattr(parser, "error", own)  # noqa: B010


def task_of_process() -> str | None:
    """The id of this process's task: ``Task.init``'s, else the run's (before ``Task.init``)."""
    task = CURRENT.task
    return task.id if task is not None else attached_task_id()


def install() -> ArgumentRecorder:
    """Put the recording wrapper around ``ArgumentParser.parse_known_args`` (once per
    process; later calls return the same recorder)."""
    present = argparse.ArgumentParser.parse_known_args
    found = getattr(present, RECORDER, None)
    if isinstance(found, ArgumentRecorder):
        return found
    recorder = ArgumentRecorder(present)

    @functools.wraps(present)
    def parse_known_args(
        self: argparse.ArgumentParser,
        args: Sequence[str] | None = None,
        namespace: argparse.Namespace | None = None,
    ) -> tuple[argparse.Namespace, list[str]]:
        return recorder.parse(self, args, namespace)

    setattr(parse_known_args, RECORDER, recorder)
    setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)  # noqa: B010
    return recorder


def connect_arguments(task_id: str, selection: Selection) -> None:
    """Connect task ``task_id``'s argparse arguments, as ``Task.init`` does.

    From now on every parse is recorded (and, in a run, given the run's values); a
    namespace the code that called ``Task.init`` parsed already is given them now, and
    recorded. Nothing happens when ``selection`` connects no argument.
    """
    if not selects_any(selection):
        found = getattr(argparse.ArgumentParser.parse_known_args, RECORDER, None)
        if isinstance(found, ArgumentRecorder):  # put in place for a script step's run
            found.selections[task_id] = selection
        return
    recorder = install()
    recorder.selections[task_id] = selection
    store = Backend.for_config().store
    values = run_values(store.get_task(task_id), selection)
    for namespace in parsed_before():
        if recorder.parsed.get(id(namespace)) is namespace:  # parsed here with the run's values
            continue
        for dest, value in values.items():
            if hasattr(namespace, dest) and isinstance(getattr(namespace, dest), PLAIN):
                setattr(namespace, dest, typed_like(getattr(namespace, dest), dest, value))
        record(store, task_id, namespace, selection)


def run_values(record: TaskRecord, selection: Selection) -> dict[str, Any]:
    """The ``Args`` values the task gives its parsers: none for a task started by hand
    (its command line is the truth), else the section as the run holds it."""
    if record.runtime.get("interactive"):
        return {}
    held = record.parameters.get(ARGS, {})
    return {dest: value for dest, value in held.items() if is_selected(selection, dest)}


def default_for(parser: argparse.ArgumentParser, dest: str, value: Any) -> Any:
    """The default that makes ``parser`` give ``dest`` the run's ``value``.

    Typed like the argument's own default when that is not text (a bool flag, a number
    without ``type=``); otherwise text, which argparse converts with the argument's
    ``type`` as it would the same text on the command line. Lists and None are kept.
    """
    if value is None or isinstance(value, list | tuple | dict):
        return value
    own = parser.get_default(dest)
    if own is not None and not isinstance(own, str):
        try:
            return coerce(value, DeclaredParameter(dest, own, repr(own)))
        except ParameterError:
            pass  # e.g. type=float with an int default: argparse converts the text
    return value if isinstance(value, str) else str(value)


PLAIN = (type(None), bool, int, float, str, list, tuple, dict)
"""Values of a parsed namespace that a run's value can be typed like; another (a ``type=``
function's result) is left as parsed, since the parser that could convert it is not known."""


def typed_like(current: Any, dest: str, value: Any) -> Any:
    """``value`` typed like ``current``, the value a namespace parsed already holds."""
    return coerce(value, DeclaredParameter(dest, current, repr(current)), label=f"{ARGS}/{dest}")


def record(store: Store, task_id: str, namespace: argparse.Namespace, selection: Selection) -> None:
    """Record the selected values of ``namespace`` as the task's ``Args`` section."""
    values = {
        str(dest): recordable(value)
        for dest, value in vars(namespace).items()
        if is_selected(selection, str(dest))
    }
    if values:
        store.set_parameters(task_id, {ARGS: values})


def recordable(value: Any) -> Any:
    """``value`` as a parameter is stored: JSON values as they are, anything else as text
    (a ``pathlib.Path`` as its path), as ClearML records arguments as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [recordable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): recordable(item) for key, item in value.items()}
    return str(value)


def parsed_before() -> list[argparse.Namespace]:
    """Namespaces the code that called ``Task.init`` holds: in the calling function, and in
    the script's (or notebook's) global names. None when clearnb itself called it (a
    pipeline attaching to its run): those names are not the task's arguments."""
    frame = inspect.currentframe()
    entered: Any = None  # the outermost clearnb frame: Task.init's, for a call by the user
    while frame is not None and _module_of(frame).partition(".")[0] == "clearnb":
        entered, frame = frame, frame.f_back
    if frame is None or entered is None or _module_of(entered) != "clearnb.task":
        return []
    main = getattr(sys.modules.get("__main__"), "__dict__", {})
    found: dict[int, argparse.Namespace] = {}
    for scope in (frame.f_locals, main):
        for value in list(scope.values()):
            if isinstance(value, tuple) and value and isinstance(value[0], argparse.Namespace):
                value = value[0]  # what parse_known_args returned, kept whole
            if isinstance(value, argparse.Namespace):
                found.setdefault(id(value), value)
    return list(found.values())


def _module_of(frame: Any) -> str:
    return str(frame.f_globals.get("__name__", ""))
