"""Where things live: the clearnb home folder, the store URL and the artifact URL.

Nothing here touches the disk at import time; :meth:`Config.from_env` only reads
environment variables, and folders are created by the store and artifact storage when
they are first written. Folders clearnb creates are readable by their owner only
(:func:`make_private_folder`), and so are the files it writes into them.

========================  =============================================  ======================
variable                  meaning                                        default
========================  =============================================  ======================
``CLEARNB_HOME``          folder holding the default store and artifacts ``./.clearnb``
``CLEARNB_STORE_URL``     SQLAlchemy URL of the metadata store            ``sqlite:///HOME/clearnb.db``
``CLEARNB_ARTIFACT_URL``  fsspec URL under which artifacts are written    ``HOME/artifacts``
``CLEARNB_CACHE_DIR``     local cache for downloaded files                ``HOME/cache``
========================  =============================================  ======================
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from clearnb.errors import ConfigurationError

HOME_ENV = "CLEARNB_HOME"
STORE_URL_ENV = "CLEARNB_STORE_URL"
ARTIFACT_URL_ENV = "CLEARNB_ARTIFACT_URL"
CACHE_DIR_ENV = "CLEARNB_CACHE_DIR"
TASK_ID_ENV = "CLEARNB_TASK_ID"
"""Set in a step kernel's environment so that ``Task.init()`` attaches to its run."""
PRIVATE_FOLDER_MODE = 0o700
"""Permissions of the folders clearnb creates (home, store folder, artifacts, cache)."""
PRIVATE_FILE_MODE = 0o600
"""Permissions of the files clearnb creates there (the SQLite file, artifacts)."""


def make_private_folder(
    path: str | os.PathLike[str], mode: int = PRIVATE_FOLDER_MODE
) -> list[Path]:
    """Create the folder ``path`` and its missing parents with exactly ``mode``, whatever
    the umask; folders that exist already are left as they are.

    Returns the folders created, outermost first (empty if ``path`` existed).
    """
    folder = Path(path).absolute()
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    created: list[Path] = []
    for folder in reversed(missing):
        try:
            folder.mkdir(mode)
        except FileExistsError:  # another process made it at the same moment
            continue
        os.chmod(folder, mode)
        created.append(folder)
    return created


def write_private_file(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` to ``path`` atomically as a file only its owner can read or write
    (its missing folders made private too), whatever the umask. Returns the path."""
    target = Path(path)
    make_private_folder(target.parent)
    scratch = target.with_name(f".{target.name[:100]}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    try:
        os.fchmod(descriptor, PRIVATE_FILE_MODE)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(scratch, target)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    return target


def make_private_tree(root: str | os.PathLike[str]) -> None:
    """Make the folders below ``root`` (and ``root``) owner-only, and the files in them
    owner-read/write (owner-executable ones stay executable): for what other code wrote
    there with the umask's permissions (an unpacked archive, a notebook papermill saved).
    Symbolic links are left alone."""
    top = Path(root)
    if top.is_symlink() or not top.exists():
        return
    if top.is_file():
        _make_private(top)
        return
    os.chmod(top, PRIVATE_FOLDER_MODE)
    for folder, names, files in os.walk(top):
        for name in names:
            path = Path(folder, name)
            if not path.is_symlink():
                os.chmod(path, PRIVATE_FOLDER_MODE)
        for name in files:
            path = Path(folder, name)
            if not path.is_symlink():
                _make_private(path)


def _make_private(path: Path) -> None:
    mode = path.stat().st_mode
    os.chmod(path, PRIVATE_FILE_MODE | (0o100 if mode & 0o100 else 0))


@dataclass(frozen=True)
class Config:
    """Locations of one clearnb installation (store, artifacts, cache)."""

    home: Path
    store_url: str
    artifact_url: str
    cache_dir: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build the configuration from ``environ`` (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        home = Path(env.get(HOME_ENV) or ".clearnb").expanduser().absolute()
        store_url = env.get(STORE_URL_ENV) or f"sqlite:///{home / 'clearnb.db'}"
        artifact_url = env.get(ARTIFACT_URL_ENV) or str(home / "artifacts")
        cache_dir = Path(env.get(CACHE_DIR_ENV) or home / "cache").expanduser().absolute()
        if "://" not in store_url:
            raise ConfigurationError(
                f"{STORE_URL_ENV}={store_url!r} is not a database URL; use e.g. "
                "'sqlite:///path/to/clearnb.db' or 'postgresql+psycopg://user@host/db'."
            )
        return cls(home=home, store_url=store_url, artifact_url=artifact_url, cache_dir=cache_dir)

    @classmethod
    def at(cls, home: str | os.PathLike[str]) -> Config:
        """Default locations below ``home`` (ignores the environment)."""
        return cls.from_env({HOME_ENV: str(home)})

    def with_urls(self, store_url: str | None = None, artifact_url: str | None = None) -> Config:
        """A copy with the store and/or artifact URL replaced."""
        return replace(
            self,
            store_url=store_url or self.store_url,
            artifact_url=artifact_url or self.artifact_url,
        )

    def make_home(self) -> Path:
        """Create the home folder (owner-only) if it does not exist yet; returns it."""
        make_private_folder(self.home)
        return self.home

    def environ(self) -> dict[str, str]:
        """Environment variables that make a child process (a kernel) use this configuration."""
        return {
            HOME_ENV: str(self.home),
            STORE_URL_ENV: self.store_url,
            ARTIFACT_URL_ENV: self.artifact_url,
            CACHE_DIR_ENV: str(self.cache_dir),
        }
