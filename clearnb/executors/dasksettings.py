"""What the two sides of the Dask executor share, without importing Dask: the settings a
worker runs steps with, and the reasons a step did not run (or stopped) on a worker."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from clearnb.config import ARTIFACT_URL_ENV, CACHE_DIR_ENV, HOME_ENV, STORE_URL_ENV, Config

PLUGIN_PREFIX = "clearnb-runner-"
DEFAULT_LEASE = 30.0
"""Seconds a worker's claim on a running step lasts without a heartbeat."""
DEFAULT_HEARTBEAT = 0.5
"""Seconds between two heartbeats of a worker running steps (abort requests arrive with them)."""
WORKER_LOST = "WorkerLost"
"""The ``ename`` of a step whose Dask worker (or scheduler) was lost while it ran."""


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs to run steps: where the store and artifacts are, the
    controller's host (a SQLite store is shared on that host only), the lease."""

    store_url: str
    artifact_url: str
    home: str
    controller_host: str
    lease: float = DEFAULT_LEASE
    heartbeat: float = DEFAULT_HEARTBEAT

    @property
    def plugin_name(self) -> str:
        """One plugin (one kernel pool per worker) per store and artifact storage."""
        key = f"{self.store_url}\n{self.artifact_url}\n{self.home}".encode()
        return PLUGIN_PREFIX + hashlib.sha256(key).hexdigest()[:12]

    def config(self, host: str) -> Config:
        """The configuration on a worker on ``host``: the controller's store and artifact
        storage; on another host, the worker's own ``CLEARNB_HOME`` (runs' folders, cache)
        where it sets one."""
        own_home = os.environ.get(HOME_ENV) if host != self.controller_host else None
        environ = {
            HOME_ENV: own_home or self.home,
            STORE_URL_ENV: self.store_url,
            ARTIFACT_URL_ENV: self.artifact_url,
        }
        if os.environ.get(CACHE_DIR_ENV):
            environ[CACHE_DIR_ENV] = os.environ[CACHE_DIR_ENV]
        return Config.from_env(environ)


def sqlite_refusal(store_url: str, controller_host: str, worker_host: str) -> str | None:
    """Why a worker on ``worker_host`` cannot use the store, or None if it can: a SQLite
    file is shared by the processes of one machine only."""
    if not store_url.startswith("sqlite") or worker_host == controller_host:
        return None
    return (
        f"the store is a SQLite file on {controller_host} ({store_url}), which the Dask "
        f"worker on {worker_host} cannot share: set CLEARNB_STORE_URL to a PostgreSQL "
        "database every machine reaches (postgresql+psycopg://user@dbhost/clearnb, "
        "pip install 'clearnb[postgres]') and CLEARNB_ARTIFACT_URL to storage they all "
        f"reach (s3://..., a shared folder), or run the workers on {controller_host}"
    )


def cell_text(cell: tuple[int, int] | None) -> str:
    """``cell i of n`` for the 0-based ``(index, count)`` of the running cell."""
    if cell is None or not cell[1]:
        return "its notebook, before its first cell"
    return f"cell {cell[0] + 1} of {cell[1]}"
