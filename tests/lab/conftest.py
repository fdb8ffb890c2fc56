"""A real Jupyter server (pytest-jupyter's fixtures) with clearnb's extension loaded, on a
store of its own in a temporary folder outside the server's root."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403  (the server fixtures and hooks)

from clearnb.backend import Backend
from clearnb.config import Config
from tests.helpers import isolated_home

Api = Callable[..., Awaitable[Any]]


@pytest.fixture
def lab_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The store the server sees (``CLEARNB_HOME``), outside the server's root."""
    return isolated_home(tmp_path / "clearnb-home", monkeypatch)


@pytest.fixture
def jp_server_config(lab_home: Path) -> dict[str, Any]:
    """Load clearnb's server extension (after ``CLEARNB_HOME`` is set)."""
    del lab_home
    return {"ServerApp": {"jpserver_extensions": {"clearnb.lab": True}}}


@pytest.fixture
def backend(lab_home: Path) -> Backend:
    """The same store as the server's, opened in the test."""
    return Backend.for_config(Config.at(lab_home))


@pytest.fixture
def api(jp_fetch: Any) -> Api:
    """``await api("runs", params={...})`` or ``api("notebook/run", body={...})``: the
    decoded JSON answer and the status, errors included (never raised)."""

    async def call(
        route: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        parts = ["clearnb", "api", *route.split("/")]
        options: dict[str, Any] = {"raise_error": False}
        if params:
            options["params"] = params
        if body is not None or raw is not None:
            options["method"] = "POST"
            options["body"] = raw if raw is not None else json.dumps(body)
        response = await jp_fetch(*parts, **options)
        text = response.body.decode() if response.body else "null"
        return response.code, json.loads(text)

    return call
