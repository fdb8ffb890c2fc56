"""Python scripts read as notebooks, so that a ClearML step script runs as a step.

A script with ``# %%`` cell markers (the percent format of Jupyter, VS Code and Spyder) is
split at its markers; any other script becomes one cell per top-level block (jupytext's
*light* format: blocks are separated by blank lines, and a function or class stays whole).
The conversion is jupytext's, imported when a script is first read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from clearnb.errors import ClearnbError

if TYPE_CHECKING:
    from nbformat import NotebookNode

SCRIPT_SUFFIX = ".py"
PERCENT_MARKER = re.compile(r"^# ?%%", re.MULTILINE)
"""A line opening a cell in the percent format (``# %%``, ``# %% [markdown]``, ``#%%``)."""
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def is_script(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` names a Python script (run as a notebook) rather than a notebook."""
    return Path(path).suffix.lower() == SCRIPT_SUFFIX


def script_format(text: str) -> str:
    """The jupytext format the script ``text`` is read in: ``percent`` or ``light``."""
    return "percent" if PERCENT_MARKER.search(text) else "light"


def script_notebook(text: str) -> NotebookNode:
    """The notebook of a Python script's ``text``: its cells, and a Python 3 kernel.

    The notebook records the format it was read in under ``metadata.jupytext``, as
    jupytext does, so that the executed notebook says where its cells came from.
    """
    try:
        import jupytext
    except ImportError as exc:  # a core dependency: only a broken install lacks it
        raise ClearnbError(
            f"Reading a Python script as a notebook needs jupytext ({exc}); install it with "
            "`pip install jupytext`."
        ) from exc
    nb: NotebookNode = jupytext.reads(text, fmt=f"py:{script_format(text)}")
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.setdefault("language_info", {"name": "python"})
    return nb
