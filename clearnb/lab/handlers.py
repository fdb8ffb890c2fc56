"""The ``/clearnb/api/...`` routes of the Jupyter server extension."""

from __future__ import annotations

from typing import Any


def setup_handlers(server_app: Any) -> None:
    """Add clearnb's routes to ``server_app`` (filled in with the API)."""
    del server_app
