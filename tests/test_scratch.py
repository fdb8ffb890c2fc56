"""Scratch space lives in clearnb's cache, and what a killed process left there is swept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from clearnb.backend import Backend
from clearnb.config import Config
from clearnb.scratch import make_scratch, scratch_root

pytestmark = pytest.mark.timeout(120)

KILLED_WRITER = """
import os, signal, sys
from clearnb.scratch import kernel_scratch, make_scratch
folder = make_scratch(sys.argv[1], "artifact")
(folder / "encoded.bin").write_bytes(b"x" * 5_000_000)
kernels = kernel_scratch()
(kernels / "k1.log").write_text("a kernel's output")
print(folder, kernels, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_what_a_killed_writer_left_is_swept_on_the_next_start(tmp_path: Path) -> None:
    config = Config.at(tmp_path / "home")
    done = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(config.cache_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    left, kernels = (Path(part) for part in done.stdout.split())
    assert kernels.parent == Path(tempfile.gettempdir()) and kernels.name.startswith("cnb-")
    assert left.parent == scratch_root(config.cache_dir) and (left / "encoded.bin").exists()
    mine = make_scratch(config.cache_dir, "artifact")  # this process's: it goes on
    backend = Backend.open(config)
    try:
        assert not left.exists(), "the dead writer's scratch is removed"
        assert not kernels.exists(), "and its kernels' folder"
        assert mine.exists(), "a live process's scratch is kept"
    finally:
        backend.close()


def test_artifact_writes_use_the_cache_scratch_not_the_system_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "system-tmp"
    system.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system))
    backend = Backend.open(Config.at(tmp_path / "home"))
    try:
        record = backend.artifacts.save("0" * 32, "weights", np.arange(1000))
        assert backend.artifacts.load(record).sum() == 499500
    finally:
        backend.close()
    assert list(system.iterdir()) == []
    root = scratch_root(tmp_path / "home" / "cache")
    assert root.is_dir() and list(root.iterdir()) == [], "scratch is removed after use"
    assert os.stat(root).st_mode & 0o077 == 0
