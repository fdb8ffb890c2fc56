"""One configured installation: its metadata store and artifact storage, opened once."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

from clearnb.artifacts import ArtifactStorage
from clearnb.config import Config
from clearnb.scratch import sweep
from clearnb.store import Store, open_store


@dataclass
class Backend:
    """The store and artifact storage of one :class:`Config`."""

    config: Config
    store: Store
    artifacts: ArtifactStorage

    @classmethod
    def open(cls, config: Config) -> Backend:
        """Open (without caching) the store and artifact storage of ``config``; creates
        its home folder (owner-only) if needed and possible."""
        with contextlib.suppress(OSError):  # a read-only place: only runs will need it
            config.make_home()
        store = open_store(config.store_url)
        artifacts = ArtifactStorage(config.artifact_url, config.cache_dir)
        sweep(config.cache_dir)  # what processes killed mid-write left behind
        return cls(config, store, artifacts)

    @classmethod
    def for_config(cls, config: Config | None = None) -> Backend:
        """The shared backend of ``config`` (from the environment by default).

        Opening a store costs a connection pool, so one backend per configuration is
        kept for the life of the process; a different ``CLEARNB_HOME`` or URL gets its own.
        """
        config = config or Config.from_env()
        with _LOCK:
            backend = _OPEN.get(config)
            if backend is None:
                backend = cls.open(config)
                _OPEN[config] = backend
            return backend

    def close(self) -> None:
        """Close the store's connections."""
        self.store.close()


_LOCK = threading.Lock()
_OPEN: dict[Config, Backend] = {}
