from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clearnb.config import Config
from clearnb.execution.runner import NotebookRunner


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A clearnb home for the module, set as CLEARNB_HOME for code reading the environment."""
    path = tmp_path_factory.mktemp("clearnb-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLEARNB_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def runner(home: Path) -> Iterator[NotebookRunner]:
    """One runner (and kernel pool) shared by the tests of a module."""
    with NotebookRunner(Config.at(home), pool_size=2) as shared:
        yield shared
