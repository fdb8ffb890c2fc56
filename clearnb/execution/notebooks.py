"""Reading notebooks: clear errors for missing or malformed files, and a code fingerprint."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from clearnb.errors import NotANotebookError, NotebookNotFoundError

if TYPE_CHECKING:
    from nbformat import NotebookNode

INJECTED_TAG = "injected-parameters"
PARAMETERS_TAG = "parameters"


def load_notebook(path: str | os.PathLike[str]) -> NotebookNode:
    """Read and validate the notebook at ``path`` (version 4).

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
    try:
        text = file.read_text(encoding="utf-8")
        node: NotebookNode = nbformat.reads(text, as_version=4)  # type: ignore[no-untyped-call]
    except (UnicodeDecodeError, json.JSONDecodeError, nbformat.reader.NotJSONError) as exc:
        raise NotANotebookError(
            f"{file} is not a Jupyter notebook (it is not notebook JSON: {exc}). "
            "Give the path of an .ipynb file saved by Jupyter.",
            path=str(file),
        ) from exc
    except Exception as exc:  # nbformat raises assorted errors for JSON that is not a notebook
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
