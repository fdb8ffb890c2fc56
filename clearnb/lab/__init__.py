"""clearnb in JupyterLab: the server half of the extension in ``extensions/clearnb-lab``.

The Jupyter server loads this module (``jpserver_extensions``) and adds the handlers of
:mod:`clearnb.lab.handlers` under its own base URL (``/clearnb/api/...``), with its own
authentication. The front end's built files are installed with the package as the
``clearnb-lab`` lab extension.
"""

from __future__ import annotations

from typing import Any

LABEXTENSION_NAME = "clearnb-lab"
"""The front end's package name, and its folder in ``share/jupyter/labextensions``."""


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where JupyterLab finds the built front end (a folder beside this module)."""
    return [{"src": "labextension", "dest": LABEXTENSION_NAME}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """The server extension: this module."""
    return [{"module": "clearnb.lab"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    """Add clearnb's handlers to ``server_app``'s web application."""
    from clearnb.lab.handlers import setup_handlers

    setup_handlers(server_app)
