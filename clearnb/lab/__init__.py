"""clearnb in JupyterLab: the server half of the extension in ``extensions/clearnb-lab``.

The Jupyter server loads this module (``jpserver_extensions``); its app
(:mod:`clearnb.lab.app`) adds the routes of :mod:`clearnb.lab.handlers` under the server's
own base URL (``/clearnb/api/...``), behind its own authentication. The front end's built
files are installed with the package as the ``clearnb-lab`` lab extension.
"""

from __future__ import annotations

from typing import Any

LABEXTENSION_NAME = "clearnb-lab"
"""The front end's package name, and its folder in ``share/jupyter/labextensions``."""


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where JupyterLab finds the built front end (a folder beside this module)."""
    return [{"src": "labextension", "dest": LABEXTENSION_NAME}]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """The server extension: :class:`clearnb.lab.app.ClearnbLab`."""
    from clearnb.lab.app import ClearnbLab

    return [{"module": "clearnb.lab", "app": ClearnbLab}]
