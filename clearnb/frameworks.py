"""Models saved with an ML framework's own call become the current task's output models.

As ClearML's ``auto_connect_frameworks``: ``joblib.dump``, ``xgboost``'s ``save_model``,
``torch.save`` and ``lightgbm``'s ``save_model`` are wrapped (once per process) so that,
after the framework has written its file, an :class:`~clearnb.model.OutputModel` of the
current task is registered for it: named ``"<task name> - <file stem>"``, with the
framework's name and the file's weights stored (the user's file is kept). Saving the same
file again updates the same model.

:func:`install` wraps the modules already imported and hooks the import of the others
(a ``sys.meta_path`` finder); ``Task.init`` calls it with its ``auto_connect_frameworks``,
and clearnb's kernels call it as they start, so a step that never calls ``Task.init``
registers its models too. ``auto_connect_frameworks`` is ``True``, ``False``, or a dict by
ClearML's keys (``"xgboost"``, ``"scikit"``, ``"joblib"``, ``"pytorch"``, ``"lightgbm"``): a
key set to False turns that framework off, a wildcard string or list keeps only the files
whose path matches.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from types import ModuleType
from typing import Any

from clearnb import current
from clearnb.current import CURRENT
from clearnb.model import OutputModel, task_of
from clearnb.modelmeta import Framework

__all__ = ["BINDINGS", "KEYS", "Binding", "FrameworkHooks", "install", "should_connect"]

log = logging.getLogger(__name__)

ORIGINAL = "__clearnb_original__"
"""Attribute of a wrapper holding the function it wraps (how a wrapped one is recognised)."""


@dataclass(frozen=True)
class Binding:
    """One framework call that saves a model: ``owner.attribute`` of module ``module``
    (``owner`` empty for a function of the module), its arguments naming the saved object
    and the file, and the ``auto_connect_frameworks`` keys that must all be on."""

    module: str
    owner: str
    attribute: str
    object_arg: str
    file_arg: str
    keys: tuple[str, ...]
    framework: Callable[[Any], str]


def _joblib_framework(obj: Any) -> str:
    """ScikitLearn for a scikit-learn estimator (XGBoost for xgboost's), else Joblib."""
    package = (getattr(type(obj), "__module__", "") or "").partition(".")[0]
    if package == "sklearn":
        return Framework.scikitlearn
    if package == "xgboost":
        return Framework.xgboost
    return "Joblib"


BINDINGS: tuple[Binding, ...] = (
    Binding("joblib", "", "dump", "value", "filename", ("joblib", "scikit"), _joblib_framework),
    Binding(
        "xgboost", "Booster", "save_model", "self", "fname", ("xgboost",),
        lambda _: Framework.xgboost,
    ),
    Binding(
        "xgboost", "XGBModel", "save_model", "self", "fname", ("xgboost",),
        lambda _: Framework.xgboost,
    ),
    Binding("torch", "", "save", "obj", "f", ("pytorch",), lambda _: Framework.pytorch),
    Binding(
        "lightgbm", "Booster", "save_model", "self", "filename", ("lightgbm",),
        lambda _: Framework.lightgbm,
    ),
)  # fmt: skip
"""Every framework call wrapped, by the module whose import makes it available."""
KEYS = frozenset(key for binding in BINDINGS for key in binding.keys)
"""The keys of ``auto_connect_frameworks`` honoured here."""


def should_connect(settings: bool | Mapping[str, Any], key: str) -> bool:
    """Whether ``auto_connect_frameworks`` turns framework ``key`` on: as ClearML reads it,
    a missing key is on and an empty dict turns everything off."""
    if not isinstance(settings, Mapping):
        return bool(settings)
    if not settings:
        return False
    value = settings.get(key, True)
    return bool(value) if isinstance(value, bool) else True


def wildcards_of(settings: bool | Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    """The file wildcards ``auto_connect_frameworks`` gives for ``keys`` ([]: every file)."""
    if not isinstance(settings, Mapping):
        return []
    found: list[str] = []
    for key in keys:
        value = settings.get(key)
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list | tuple):
            found.extend(str(item) for item in value)
    return found


def _matches(path: Path, wildcards: Sequence[str]) -> bool:
    posix = path.as_posix()
    return not wildcards or any(fnmatch(posix, w) or fnmatch(path.name, w) for w in wildcards)


class FrameworkHooks:
    """This process's framework bindings: what is wrapped, the current settings, and the
    model registered for each saved file (kept on :data:`clearnb.current.CURRENT`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.settings: bool | Mapping[str, Any] = True
        self.models: dict[tuple[str, str], str] = {}
        """``(task id, absolute file path) -> model id``: a file saved again updates its model."""
        self.saving = threading.local()
        """Set while a wrapped call runs, so that a save calling another (xgboost's
        ``XGBModel.save_model`` calls its booster's) registers one model."""
        self.finder: _ImportHook | None = None

    # -- wrapping -----------------------------------------------------------------------

    def patch_loaded(self) -> None:
        """Wrap the calls of every bound module already imported."""
        for binding in BINDINGS:
            module = sys.modules.get(binding.module)
            if module is not None:
                self.patch(binding, module)

    def patch_module(self, module: ModuleType) -> None:
        """Wrap the calls of ``module``, just imported."""
        for binding in BINDINGS:
            if binding.module == module.__name__:
                self.patch(binding, module)

    def patch(self, binding: Binding, module: ModuleType) -> None:
        """Wrap ``binding``'s call in ``module`` unless it is wrapped already."""
        owner: Any = getattr(module, binding.owner, None) if binding.owner else module
        original = getattr(owner, binding.attribute, None) if owner is not None else None
        if original is None or hasattr(original, ORIGINAL):
            return
        setattr(owner, binding.attribute, self._wrapper(binding, original))

    def _wrapper(self, binding: Binding, original: Callable[..., Any]) -> Callable[..., Any]:
        try:
            signature: inspect.Signature | None = inspect.signature(original)
        except (TypeError, ValueError):
            signature = None

        @functools.wraps(original)
        def saving(*args: Any, **kwargs: Any) -> Any:
            if getattr(self.saving, "active", False):
                return original(*args, **kwargs)
            self.saving.active = True
            try:
                result = original(*args, **kwargs)
            finally:
                self.saving.active = False
            if signature is not None:
                try:
                    given = signature.bind(*args, **kwargs).arguments
                    self.saved(binding, given.get(binding.object_arg), given.get(binding.file_arg))
                except Exception as exc:  # the user's save succeeded: never fail it
                    log.warning("could not register the model saved by %s: %s", saving, exc)
            return result

        setattr(saving, ORIGINAL, original)
        return saving

    # -- registering --------------------------------------------------------------------

    def saved(self, binding: Binding, obj: Any, file: Any) -> OutputModel | None:
        """Register the model ``obj`` just saved to ``file`` as the current task's output
        (None when there is no current task, the file is not a path, or the framework is off)."""
        if not isinstance(file, str | os.PathLike) or (
            CURRENT.task is None and not current.attached_task_id()
        ):
            return None
        settings = self.settings
        if not all(should_connect(settings, key) for key in binding.keys):
            return None
        path = Path(os.fspath(file)).absolute()
        if not path.is_file() or not _matches(path, wildcards_of(settings, binding.keys)):
            return None
        _, task_id, task_name, _ = task_of(None)
        with self.lock:
            known = self.models.get((task_id, str(path)))
            model = OutputModel(
                name=f"{task_name} - {path.stem}",
                framework=binding.framework(obj),
                base_model_id=known,
            )
            model.update_weights(weights_filename=str(path), auto_delete_file=False)
            self.models[(task_id, str(path))] = model.id
        return model


class _ImportHook(importlib.abc.MetaPathFinder):
    """Wraps a bound module's calls as soon as the module has been imported."""

    def __init__(self, hooks: FrameworkHooks) -> None:
        self.hooks = hooks
        self.names = frozenset(binding.module for binding in BINDINGS)
        self.finding = threading.local()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """The spec the other finders give for a bound module, its loader wrapped."""
        if fullname not in self.names or getattr(self.finding, "active", False):
            return None
        self.finding.active = True
        try:
            spec = next(
                (
                    found
                    for finder in sys.meta_path
                    if finder is not self
                    and hasattr(finder, "find_spec")
                    and (found := finder.find_spec(fullname, path, target)) is not None
                ),
                None,
            )
        finally:
            self.finding.active = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _PatchingLoader(spec.loader, self.hooks)
        return spec


class _PatchingLoader(importlib.abc.Loader):
    """A module's own loader, then the module's calls wrapped."""

    def __init__(self, loader: Any, hooks: FrameworkHooks) -> None:
        self.loader = loader
        self.hooks = hooks

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        """The module the wrapped loader creates."""
        created: ModuleType | None = self.loader.create_module(spec)
        return created

    def exec_module(self, module: ModuleType) -> None:
        """Run the module, then wrap its calls (a failure there leaves it unwrapped)."""
        self.loader.exec_module(module)
        try:
            self.hooks.patch_module(module)
        except Exception as exc:
            log.warning("could not hook %s to register its models: %s", module.__name__, exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


def install(settings: bool | Mapping[str, Any] = True) -> FrameworkHooks:
    """Bind the frameworks of this process (once) with ``auto_connect_frameworks``
    ``settings``; returns the bindings. With every framework off nothing is wrapped."""
    with CURRENT.frameworks_lock:  # not CURRENT.lock: Task.init holds it when it calls this
        hooks = CURRENT.frameworks
        if hooks is None:
            hooks = CURRENT.frameworks = FrameworkHooks()
    hooks.settings = settings
    if not any(should_connect(settings, key) for key in KEYS):
        return hooks
    with hooks.lock:
        if hooks.finder is None:
            hooks.finder = _ImportHook(hooks)
            sys.meta_path.insert(0, hooks.finder)
        hooks.patch_loaded()
    return hooks
