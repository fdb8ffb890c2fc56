"""Reading notebooks: clear errors for missing or malformed files, and a code fingerprint.

A Python script (``step.py``) is read as the notebook :mod:`clearnb.notebook.scripts` makes
of it, so that everything that reads a step (validation, the cache key, the run) takes a
script as it takes a notebook.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from clearnb.errors import KernelNotInstalledError, NotANotebookError, NotebookNotFoundError
from clearnb.notebook.scripts import is_script, script_notebook

if TYPE_CHECKING:
    from nbformat import NotebookNode

INJECTED_TAG = "injected-parameters"
PARAMETERS_TAG = "parameters"


def load_notebook(path: str | os.PathLike[str]) -> NotebookNode:
    """Read and validate the notebook at ``path`` (version 4); a ``.py`` script is read as
    a notebook (see :func:`~clearnb.notebook.scripts.script_notebook`).

    Raises :class:`NotebookNotFoundError` when the path does not exist and
    :class:`NotANotebookError` when the file is not a Jupyter notebook.
    """
    import nbformat  # imported on use: it pulls in jsonschema, slow to import

    file = Path(path)
    if not file.exists():
        raise NotebookNotFoundError(
            f"Notebook not found: {file}. Check the path (relative paths are taken from "
            f"{Path.cwd()}).",
            path=str(file),
        )
    if file.is_dir():
        raise NotANotebookError(
            f"{file} is a folder, not a notebook; give the path of an .ipynb file.", path=str(file)
        )
    if is_script(file):
        return _read_script(file)
    _check_looks_like_a_notebook(file)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise NotANotebookError(
            f"{file} is not a Jupyter notebook: it is not UTF-8 text ({exc}). "
            "Give the path of an .ipynb file saved by Jupyter.",
            path=str(file),
        ) from exc
    try:
        node: NotebookNode = nbformat.reads(text, as_version=4)  # type: ignore[no-untyped-call]
    except (json.JSONDecodeError, nbformat.reader.NotJSONError) as exc:
        problem = _json_problem(text)
        hint = (
            " (Jupyter keeps the last saved copy in .ipynb_checkpoints/)"
            if problem.startswith("its JSON")
            else ""
        )
        raise NotANotebookError(
            f"{file} is not a Jupyter notebook: {problem}. Give the path of an .ipynb file "
            f"saved by Jupyter{hint}.",
            path=str(file),
        ) from exc
    except Exception as exc:  # nbformat raises assorted errors for JSON that is not a notebook
        _check_json_is_a_notebook(file)
        raise NotANotebookError(
            f"{file} is not a valid Jupyter notebook ({type(exc).__name__}: {exc}). "
            "Open and save it in Jupyter, or give another file.",
            path=str(file),
        ) from exc
    if not isinstance(node.get("cells"), list):
        raise NotANotebookError(
            f"{file} is not a Jupyter notebook: it has no list of cells.", path=str(file)
        )
    return node


def _read_script(file: Path) -> NotebookNode:
    """The notebook of the Python script ``file``, refusing one that is not text."""
    data = file.read_bytes()
    advice = "Give the path of a Python script (UTF-8 text) or of an .ipynb file."
    if b"\0" in data[:4096]:
        raise NotANotebookError(
            f"{file} is not a Python script: it is a binary file, not text. {advice}",
            path=str(file),
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotANotebookError(
            f"{file} is not a Python script: it is not UTF-8 text ({exc}). {advice}",
            path=str(file),
        ) from exc
    return script_notebook(text)


def _json_problem(text: str) -> str:
    """Why ``text`` is not JSON, for people."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip()[:1] in ("{", "["):
            return f"its JSON is broken ({exc.msg} at line {exc.lineno}, column {exc.colno})"
    except (ValueError, RecursionError):
        pass
    return f"it is not JSON (it starts with {text.strip()[:40]!r})"


def _check_looks_like_a_notebook(file: Path) -> None:
    """Refuse, with a plain reason, files that are empty or binary."""
    advice = "Give the path of an .ipynb file saved by Jupyter."
    with open(file, "rb") as stream:
        head = stream.read(4096)
    if not head.strip():
        reason = "the file is empty" if not head else "the file holds only blank space"
        raise NotANotebookError(
            f"{file} is not a Jupyter notebook: {reason}. {advice}", path=str(file)
        )
    if b"\0" in head:
        raise NotANotebookError(
            f"{file} is not a Jupyter notebook: it is a binary file, not text. {advice}",
            path=str(file),
        )


def _check_json_is_a_notebook(file: Path) -> None:
    """Refuse JSON that is not a notebook at all, saying what it holds instead."""
    advice = "Give the path of an .ipynb file saved by Jupyter."
    try:
        data = json.loads(file.read_bytes())
    except (ValueError, RecursionError):
        return
    if not isinstance(data, dict):
        raise NotANotebookError(
            f"{file} is not a Jupyter notebook: it is JSON, but a {type(data).__name__} and "
            f"not an object with 'cells', 'metadata' and 'nbformat'. {advice}",
            path=str(file),
        )
    missing = [key for key in ("cells", "nbformat") if key not in data]
    if missing and "worksheets" not in data:
        keys = ", ".join(repr(key) for key in list(data)[:8]) or "no keys"
        raise NotANotebookError(
            f"{file} is not a Jupyter notebook: it is JSON without "
            f"{' and '.join(repr(key) for key in missing)} (it has {keys}). {advice}",
            path=str(file),
        )


def find_tagged_cell(nb: NotebookNode, tag: str) -> int:
    """Index of the first cell tagged ``tag``, or -1."""
    for index, cell in enumerate(nb.cells):
        if tag in cell.get("metadata", {}).get("tags", []):
            return index
    return -1


def code_fingerprint(nb: NotebookNode) -> str:
    """sha256 of the notebook's code cells, ignoring outputs and injected parameters."""
    digest = hashlib.sha256()
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        if INJECTED_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        digest.update(cell.get("source", "").encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def kernel_name_of(nb: NotebookNode, default: str = "python3") -> str:
    """The kernel a notebook asks for in its metadata (``python3`` when it says nothing)."""
    spec = nb.get("metadata", {}).get("kernelspec", {})
    name = spec.get("name") if isinstance(spec, dict) else None
    return str(name) if name else default


def language_of(nb: NotebookNode) -> str:
    """The language of a notebook's code: its metadata's, else its kernel's, else Python.

    papermill writes the parameters cell in this language; a notebook saved without
    ``kernelspec`` or ``language_info`` (made by a script, or stripped) runs in ``python3``.
    """
    metadata = nb.get("metadata", {})
    spec = metadata.get("kernelspec", {})
    info = metadata.get("language_info", {})
    for found in (
        spec.get("language") if isinstance(spec, dict) else None,
        info.get("name") if isinstance(info, dict) else None,
    ):
        if isinstance(found, str) and found:
            return found
    name = resolve_kernel_name(kernel_name_of(nb))
    if name != "python3":
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

        try:
            return str(KernelSpecManager().get_kernel_spec(name).language or "python")
        except NoSuchKernel:
            pass
    return "python"


def resolve_kernel_name(name: str) -> str:
    """The installed kernel that ``name`` starts, resolved as jupyter_client resolves it.

    jupyter_client starts ``python3`` for ``python`` and finds a kernel's folder whatever the
    case of its name, so a notebook saved with either runs there; it runs here too.
    """
    return "python3" if name == "python" else name.lower()


def installed_kernels() -> list[str]:
    """Names of the Jupyter kernels installed here (``jupyter kernelspec list``)."""
    from jupyter_client.kernelspec import KernelSpecManager

    return sorted(KernelSpecManager().find_kernel_specs())


def check_kernel(nb: NotebookNode, label: str) -> str:
    """The kernel ``nb`` asks for; raise :class:`KernelNotInstalledError` if it is missing.

    ``label`` names the notebook in the message (its file name, or the step).
    """
    name = kernel_name_of(nb)
    installed = installed_kernels()
    if resolve_kernel_name(name) in installed:
        return name
    spec = nb.get("metadata", {}).get("kernelspec", {})
    spec = spec if isinstance(spec, dict) else {}
    language = spec.get("language") or nb.get("metadata", {}).get("language_info", {}).get("name")
    described = f" ({spec.get('display_name') or language})" if language else ""
    listed = ", ".join(installed) or "none"
    raise KernelNotInstalledError(
        f"{label} needs the Jupyter kernel {name!r}{described}, which is not installed here "
        f"(installed kernels: {listed}). Install that kernel so that `jupyter kernelspec list` "
        "shows it, or change the notebook's kernel to an installed one (in Jupyter: Kernel > "
        "Change Kernel, then save the notebook).",
        kernel_name=name,
        installed=installed,
    )
