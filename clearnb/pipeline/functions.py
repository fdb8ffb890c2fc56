"""Function steps run as generated notebooks, so every step leaves a notebook to open.

The notebook holds the function's source, the helper functions, the module-level imports
the function uses, and a ``kwargs`` dict connected to the task (section ``kwargs``), which
the controller overrides with the step's arguments. Arguments that are other steps'
return values, or values JSON cannot hold, travel as artifacts: the kwarg holds a small
marker that :func:`load_input` turns back into the value inside the kernel.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import pprint
import re
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearnb import pysource
from clearnb.config import write_private_file
from clearnb.errors import CodecError, PipelineError
from clearnb.notebook.parameters import plain

if TYPE_CHECKING:
    from nbformat import NotebookNode

ARTIFACT_MARKER = "__clearnb_artifact__"
KWARGS_SECTION = "kwargs"


def artifact_input(task_id: str, name: str) -> dict[str, Any]:
    """The marker a kwarg holds for an input stored as artifact ``name`` of ``task_id``."""
    return {ARTIFACT_MARKER: {"task": task_id, "name": name}}


def load_input(value: Any, deserialization_function: Callable[[bytes], Any] | None = None) -> Any:
    """Inside the kernel: the value of one kwarg (markers are loaded from their artifact,
    with the pipeline's ``deserialization_function`` if it has one)."""
    if isinstance(value, dict) and set(value) == {ARTIFACT_MARKER}:
        from clearnb.task import Task

        marker = value[ARTIFACT_MARKER]
        artifact = Task.get_task(task_id=marker["task"]).artifacts[marker["name"]]
        return artifact.get(deserialization_function=deserialization_function)
    return value


def store_outputs(
    task: Any,
    result: Any,
    names: Sequence[str],
    serialization_function: Callable[[Any], bytes | bytearray] | None = None,
) -> None:
    """Inside the kernel: upload the function's return value(s) as artifacts ``names``
    (as the bytes the pipeline's ``serialization_function`` makes, if it has one).

    Every value is checked (or serialized) before any is stored, so a value that cannot be
    stored leaves none of them behind; the error names the value, its type and what to
    return instead.
    """
    if not names:
        return
    if len(names) == 1:
        values = [(names[0], result)]
    elif not isinstance(result, tuple | list) or len(result) != len(names):
        got = f"{len(result)} values" if isinstance(result, tuple | list) else "one value"
        raise PipelineError(
            f"the function returned {got}, but the step declares {len(names)} return values "
            f"({', '.join(names)}); return a tuple of {len(names)} or change function_return."
        )
    else:
        values = list(zip(names, result, strict=True))
    if serialization_function is not None:
        made = [(name, value, serialization_function(value)) for name, value in values]
        for name, value, data in made:
            task.upload_artifact(name, value, serialization_function=lambda _, made=data: made)
        return
    if len(values) > 1:
        for name, value in values:
            reason = unstorable_reason(value)
            if reason is not None:
                raise _unstorable(name, value, reason)
    for name, value in values:
        try:
            task.upload_artifact(name, value)
        except CodecError as exc:
            raise _unstorable(name, value, unstorable_reason(value) or exc.message) from None


def unstorable_reason(value: Any) -> str | None:
    """Why no built-in codec can store ``value`` (None if one can, as far as is known early).

    Values that a specific codec takes (arrays, data frames, JSON values, paths) count as
    storable; anything else must pickle.
    """
    import pickle

    from clearnb.artifacts.codecs import default_codecs

    codecs = default_codecs().candidates(value)
    if codecs and codecs[0].name != "pickle":
        return None
    try:
        pickle.dump(value, _Discard(), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        return f"it cannot be pickled ({type(exc).__name__}: {exc})"
    return None


class _Discard:
    """A file that forgets what is written to it."""

    def write(self, data: bytes) -> int:
        return len(data)


def _unstorable(name: str, value: Any, reason: str) -> CodecError:
    from clearnb.artifacts.codecs import qualified_type_name

    type_name = qualified_type_name(value)
    return CodecError(
        f"the function's return value {name!r} is a {type_name}, which cannot be stored as an "
        f"artifact: {reason}. Return a list, dict, numpy array or pandas DataFrame instead "
        "(e.g. list(...) of a generator), or write it to a file and return the file's path. "
        "None of the step's return values was stored.",
        name=name,
        type=type_name,
    )


def _read_source(function: Callable[..., Any]) -> str:
    """The function's source, dedented; a clear error where Python cannot show it."""
    try:
        return textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError) as exc:
        raise PipelineError(
            f"the source of {getattr(function, '__name__', function)!r} cannot be read "
            f"({exc}); define the function in a file or a notebook cell, not in a string."
        ) from exc


def function_source(function: Callable[..., Any]) -> str:
    """The function's source, dedented, without decorators."""
    source = _read_source(function)
    tree = pysource.parse(source)
    node = tree.body[0]
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.decorator_list:
        source = "\n".join(source.splitlines()[node.lineno - 1 :]) + "\n"  # from the def line
    return source


COMPONENT_MARKER = "_clearnb_component"
"""The attribute ``@PipelineDecorator.component`` sets on its wrapper (the component's
definition, whose ``function`` is the function it wraps)."""


def innermost(function: Callable[..., Any]) -> Callable[..., Any]:
    """The user's own function under component wrappers and the user's decorators.

    A component wrapper leads to the function it wraps. Decorators' wrappers lead, through
    ``__wrapped__`` or the one function each closes over, down to the function whose
    source carries those decorators (``@our_decorator`` over its ``def``), so that a
    notebook can apply the decoration again; without such a function, the chain stops
    where it started. Anything else is itself.
    """
    current = function
    while True:
        component = getattr(current, COMPONENT_MARKER, None)
        if component is None:
            break
        current = component.function
    found: Callable[..., Any] = current
    chain: list[Callable[..., Any]] = [found]
    while len(chain) <= MAX_WRAPPERS:
        inner = _wrapped(chain[-1])
        if inner is None or any(inner is seen for seen in chain):
            break
        chain.append(inner)
    decorated = [candidate for candidate in chain[1:] if _user_decorators(candidate)]
    return decorated[-1] if decorated else found


MAX_WRAPPERS = 20
"""How many wrappers deep :func:`innermost` looks."""


def _wrapped(function: Callable[..., Any]) -> Callable[..., Any] | None:
    """The function ``function`` wraps, as far as can be seen, or None."""
    wrapped = getattr(function, "__wrapped__", None)
    if inspect.isfunction(wrapped):
        return wrapped
    cells = getattr(function, "__closure__", None) or ()
    found = [_contents(c) for c in cells if inspect.isfunction(_contents(c))]
    return found[0] if len(found) == 1 else None


def _contents(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # a cell not yet filled
        return None


def _definition(function: Callable[..., Any]) -> tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    source = _read_source(function)
    node = pysource.parse(source).body[0]
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        raise PipelineError(f"{getattr(function, '__name__', function)!r} is not a def")
    return source, node


def _user_decorators(function: Callable[..., Any]) -> list[ast.expr]:
    """The decorators over ``function``'s ``def`` that are not clearnb's component's."""
    try:
        _, node = _definition(function)
    except PipelineError:
        return []
    namespace = getattr(function, "__globals__", {})
    return [d for d in node.decorator_list if not _is_component(d, namespace)]


def _is_component(decorator: ast.expr, namespace: Mapping[str, Any]) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    path: list[str] = []
    while isinstance(target, ast.Attribute):
        path.insert(0, target.attr)
        target = target.value
    if not isinstance(target, ast.Name) or target.id not in namespace:
        return False
    value = namespace[target.id]
    for attribute in path:
        value = getattr(value, attribute, None)
    module = getattr(value, "__module__", "") or ""
    return module.startswith("clearnb.") and getattr(value, "__name__", "") == "component"


def decorated_source(
    function: Callable[..., Any],
) -> tuple[str, list[Callable[..., Any]]]:
    """The source that defines ``function`` in a notebook, and the decorators it needs.

    For a function under the user's decorators this is the innermost function's source
    with those decorators kept (clearnb's component decorator dropped), so that the name
    it defines is the decorated function; the decorators defined as functions in its
    module come second, to be defined before it (imported ones come with the imports).
    """
    inner = innermost(function)
    decorators = _user_decorators(inner) if inner is not function else []
    if not decorators:
        return function_source(inner), []
    source, node = _definition(inner)
    lines = source.splitlines()
    kept = [f"@{ast.get_source_segment(source, d)}" for d in decorators]
    body = "\n".join([*kept, *lines[node.lineno - 1 :]]) + "\n"
    namespace = getattr(inner, "__globals__", {})
    needed: list[Callable[..., Any]] = []
    for decorator in decorators:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        while isinstance(target, ast.Attribute):
            target = target.value
        value = namespace.get(target.id) if isinstance(target, ast.Name) else None
        if inspect.isfunction(value) and value.__module__ == inner.__module__:
            needed.append(value)
    return body, needed


SERIALIZE = "serialize"
DESERIALIZE = "deserialize"


def serializer_parts(
    function: Callable[..., Any] | None, role: str
) -> tuple[list[Callable[..., Any]], list[str], str]:
    """How a generated notebook gets the pipeline's (de)serialization ``function``: the
    functions to define there (as helpers), the import lines, and the name to call
    (``"None"`` when there is no function). A ``def`` travels as its source (it imports what
    it needs inside, as ClearML asks); a function of an installed module (``pickle.dumps``)
    is imported from it."""
    if function is None:
        return [], [], "None"
    name = getattr(function, "__name__", "")
    if inspect.isfunction(function) and name != "<lambda>":
        _read_source(function)  # a clear error where the source cannot be read
        return [function], [], name
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", "")
    if module and module != "__main__" and qualname.isidentifier():
        alias = f"clearnb_{role}"
        return [], [f"from {module} import {qualname} as {alias}"], alias
    raise PipelineError(
        f"the pipeline's artifact_{role}ation_function {name or function!r} cannot be sent "
        "to the steps' notebooks: define it with def (importing what it needs inside), or "
        "use a function of an installed module"
    )


def _used_names(source: str) -> set[str]:
    tree = pysource.parse(source)
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)} | {
        node.value.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
    }


def unbound_names(
    function: Callable[..., Any], helpers: Sequence[Callable[..., Any]] = ()
) -> list[str]:
    """Global names the function (or a helper) uses that its generated notebook cannot give it.

    The notebook has the function, its helpers and the module-level imports they use;
    any other global (a module variable, a function that is not a helper) would be
    undefined there, so it is reported before anything runs.
    """
    import builtins

    main, decorators = decorated_source(function)
    helpers = [*decorators, *helpers]
    function = innermost(function)
    sources = [main, *(function_source(h) for h in helpers)]
    defined = {getattr(h, "__name__", "") for h in helpers} | {function.__name__}
    wanted: set[str] = set()
    for source in sources:
        table = pysource.symbols(source)
        for child in table.get_children():
            wanted |= _globals_used(child)
    importable = set()
    for statement in module_imports(function, wanted):
        for node in ast.walk(pysource.parse(statement)):
            if isinstance(node, ast.alias):
                importable.add((node.asname or node.name).split(".")[0])
    known = defined | importable | set(dir(builtins)) | {"Task", "load_input", "store_outputs"}
    return sorted(wanted - known)


def _globals_used(table: Any) -> set[str]:
    found = {
        symbol.get_name()
        for symbol in table.get_symbols()
        if symbol.is_referenced() and symbol.is_global() and not symbol.is_assigned()
    }
    for child in table.get_children():
        found |= _globals_used(child)
    return found


def module_imports(function: Callable[..., Any], names: Iterable[str]) -> list[str]:
    """Module-level import statements of the function's module that bind any of ``names``."""
    module = inspect.getmodule(function)
    try:
        source = inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError):
        source = ""
    if not source:
        return []
    wanted = set(names)
    found: list[str] = []
    for node in pysource.parse(source).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound = {(alias.asname or alias.name).split(".")[0] for alias in node.names}
            if bound & wanted:
                segment = ast.get_source_segment(source, node)
                if segment and segment not in found:
                    found.append(segment)
    return found


def portable_source(
    function: Callable[..., Any], helpers: Sequence[Callable[..., Any]] = ()
) -> dict[str, Any]:
    """A function step's code as text another process can load (:func:`load_portable`).

    The text holds the module-level imports the functions use, the helpers and the
    function itself, so it runs without the module (or notebook) that defined them.
    """
    main, decorators = decorated_source(function)
    function = innermost(function)
    helper_sources = [function_source(h) for h in [*decorators, *helpers]]
    used: set[str] = set()
    for source in [main, *helper_sources]:
        used |= _used_names(source)
    parts = ["\n".join(module_imports(function, used)), *helper_sources, main]
    return {
        "code": "\n\n".join(part.rstrip() for part in parts if part.strip()) + "\n",
        "function": function.__name__,
        "helpers": [h.__name__ for h in helpers],
    }


def load_portable(
    portable: Mapping[str, Any], folder: Path
) -> tuple[Callable[..., Any], list[Callable[..., Any]]]:
    """The function (and helpers) of :func:`portable_source` text, loaded as a module
    written under ``folder`` (so that its source can be read again to build notebooks)."""
    import importlib.util
    import sys

    code = str(portable["code"])
    digest = hashlib.sha256(code.encode("utf-8")).hexdigest()[:16]
    name = f"clearnb_step_{digest}"
    module = sys.modules.get(name)
    if module is None:
        path = folder / f"{name}.py"
        if not path.exists():
            write_private_file(path, code)
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise PipelineError(f"the function step code at {path} cannot be loaded")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    function = getattr(module, str(portable["function"]))
    helpers = [getattr(module, helper) for helper in portable.get("helpers") or []]
    return function, helpers


def build_notebook(
    step: str,
    function: Callable[..., Any],
    kwargs: Mapping[str, Any],
    returns: Sequence[str],
    helpers: Sequence[Callable[..., Any]] = (),
    serialization: tuple[Callable[..., Any] | None, Callable[..., Any] | None] = (None, None),
) -> NotebookNode:
    """The notebook that runs ``function(**kwargs)`` as step ``step``; ``serialization``
    is the pipeline's (serialize, deserialize) functions for its inputs and outputs."""
    import nbformat

    main, decorators = decorated_source(function)
    function = innermost(function)
    name = function.__name__
    serializers, serializer_imports, serialize = serializer_parts(serialization[0], SERIALIZE)
    deserializers, more_imports, deserialize = serializer_parts(serialization[1], DESERIALIZE)
    # without functions the notebook stays as it always was (and so do cache keys)
    serialize = "" if serialization[0] is None else f", {serialize}"
    deserialize = "" if serialization[1] is None else f", {deserialize}"
    helper_sources = [function_source(h) for h in [*decorators, *helpers]]
    used: set[str] = set()
    for source in [main, *helper_sources]:
        used |= _used_names(source)
    imports = module_imports(function, used) + serializer_imports + more_imports
    for serializer in [*serializers, *deserializers]:
        source = function_source(serializer)
        helper_sources.insert(0, source)
        imports += [
            line for line in module_imports(serializer, _used_names(source)) if line not in imports
        ]
    defaults = {key: _jsonable_default(plain(value)) for key, value in kwargs.items()}
    doc = inspect.getdoc(function) or ""
    cells = [
        nbformat.v4.new_markdown_cell(  # type: ignore[no-untyped-call]
            f"# Step `{step}`: `{name}()`\n\n{doc}".rstrip()
        ),
        nbformat.v4.new_code_cell(  # type: ignore[no-untyped-call]
            "from clearnb import Task\n"
            "from clearnb.pipeline.functions import load_input, store_outputs\n"
            + "".join(f"{line}\n" for line in imports)
        ),
        nbformat.v4.new_code_cell("\n\n".join([*helper_sources, main]).rstrip()),  # type: ignore[no-untyped-call]
        nbformat.v4.new_code_cell(  # type: ignore[no-untyped-call]
            "task = Task.init()\n"
            f"kwargs = {pprint.pformat(defaults, indent=4, sort_dicts=True)}\n"
            f"task.connect(kwargs, name={KWARGS_SECTION!r})\n"
            f"inputs = {{key: load_input(value{deserialize}) for key, value in kwargs.items()}}"
        ),
        nbformat.v4.new_code_cell(f"result = {name}(**inputs)\nresult"),  # type: ignore[no-untyped-call]
        nbformat.v4.new_code_cell(  # type: ignore[no-untyped-call]
            f"store_outputs(task, result, {list(returns)!r}{serialize})"
        ),
    ]
    nb = nbformat.v4.new_notebook(  # type: ignore[no-untyped-call]
        cells=cells,
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "clearnb": {"step": step, "function": name},
        },
    )
    stem = re.sub(r"[^a-zA-Z0-9_-]", "_", step)[:40]  # nbformat's cell ids take only these
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"{stem}-{index}"
    return nb  # type: ignore[no-any-return]


def write_notebook(nb: NotebookNode, folder: Path) -> Path:
    """Write ``nb`` under ``folder``, named by its content (identical code, one file)."""
    import nbformat

    text = nbformat.writes(nb)  # type: ignore[no-untyped-call]
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    step = nb.metadata.get("clearnb", {}).get("step", "step")
    path = folder / f"{step}-{digest}.ipynb"
    if not path.exists():
        write_private_file(path, text)
    return path


def _jsonable_default(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value
