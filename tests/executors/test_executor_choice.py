"""Naming where steps run: ``executor=``, ``CLEARNB_EXECUTOR``, pipeline files, and the
errors for a bad value, a missing ``distributed`` or a SQLite file other hosts cannot share."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clearnb import PipelineController, PipelineDecorator
from clearnb.errors import ConfigurationError, PipelineError
from clearnb.executors.choice import ExecutorChoice, executor_choice, executor_from_env
from clearnb.executors.dasksettings import sqlite_refusal
from clearnb.pipeline import serialize
from tests.helpers import NOTEBOOKS, require_module
from tests.test_cli import invoke

TRIVIAL = str(NOTEBOOKS / "pipeline" / "trivial.ipynb")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLEARNB_HOME", str(tmp_path))
    monkeypatch.delenv("CLEARNB_EXECUTOR", raising=False)
    monkeypatch.delenv("CLEARNB_STORE_URL", raising=False)
    return tmp_path


@pytest.mark.parametrize(
    ("value", "kind", "address", "url"),
    [
        ("local", "local", None, "local"),
        ("dask", "dask", None, "dask"),
        ("DASK", "dask", None, "dask"),
        ("dask://scheduler", "dask", "tcp://scheduler:8786", "dask://scheduler:8786"),
        ("dask://10.0.0.5:9000/", "dask", "tcp://10.0.0.5:9000", "dask://10.0.0.5:9000"),
    ],
)
def test_executor_names(value: str, kind: str, address: str | None, url: str) -> None:
    choice = executor_choice(value)
    assert choice == ExecutorChoice(kind, address)
    assert choice.url == url and choice.is_dask == (kind == "dask")
    assert executor_choice(url) == choice, "the URL written to a file reads back the same"


@pytest.mark.parametrize("value", ["spark", "dask://", "dask://host:port", "dask://a/b", 42])
def test_a_bad_executor_is_refused_naming_what_is_accepted(value: object) -> None:
    with pytest.raises(ConfigurationError, match="dask://HOST") as caught:
        executor_choice(value)
    assert "executor" in str(caught.value)


def test_nothing_named_means_the_default() -> None:
    assert executor_choice(None) is None and executor_choice("  ") is None
    assert executor_from_env({}) is None


def test_the_environment_names_the_executor_of_pipelines_that_name_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLEARNB_EXECUTOR", "dask://sched:8786")
    assert PipelineController(name="p", project="x").spec.executor == ExecutorChoice(
        "dask", "tcp://sched:8786"
    )
    given = PipelineController(name="p", project="x", executor="local")
    assert given.spec.executor == ExecutorChoice("local"), "an argument beats the environment"
    monkeypatch.setenv("CLEARNB_EXECUTOR", "yarn")
    with pytest.raises(ConfigurationError, match="CLEARNB_EXECUTOR: executor 'yarn'"):
        PipelineController(name="p", project="x")


def test_the_executor_is_kept_in_the_pipeline_file_and_its_code(tmp_path: Path) -> None:
    pipe = PipelineController(name="p", project="x", executor="dask://sched")
    pipe.add_step("one", notebook=TRIVIAL)
    assert pipe.to_dict()["executor"] == "dask://sched:8786"
    assert "executor='dask://sched:8786'" in pipe.to_code()
    loaded = PipelineController.from_file(pipe.save(tmp_path / "p.json"))
    assert loaded.spec.executor == ExecutorChoice("dask", "tcp://sched:8786")
    plain = PipelineController(name="p", project="x")
    assert "executor" not in plain.to_dict(), "no key for the default"


def test_a_bad_executor_in_a_file_is_one_of_its_problems(tmp_path: Path) -> None:
    data = PipelineController(name="p", project="x").to_dict()
    data["executor"] = "mesos://x"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(PipelineError, match="'executor': executor 'mesos://x' is not known"):
        serialize.read_file(path)


def test_a_decorated_pipeline_refuses_a_bad_executor_when_decorated() -> None:
    with pytest.raises(ConfigurationError, match="not known"):
        PipelineDecorator.pipeline(name="p", project="x", executor="hadoop")


def test_clearnb_run_refuses_a_bad_executor_before_running(home: Path) -> None:
    result = invoke(home, "run", TRIVIAL, "--executor", "dask://")
    assert result.returncode == 2, result.output
    assert "does not name a scheduler" in result.output


def test_a_sqlite_file_is_shared_on_its_own_host_only() -> None:
    url = "sqlite:////data/clearnb.db"
    assert sqlite_refusal(url, "laptop", "laptop") is None
    assert sqlite_refusal("postgresql+psycopg://db/clearnb", "laptop", "node7") is None
    refusal = sqlite_refusal(url, "laptop", "node7")
    assert refusal is not None
    assert "SQLite file on laptop" in refusal and "worker on node7" in refusal
    assert "CLEARNB_STORE_URL" in refusal and "PostgreSQL" in refusal


def test_without_distributed_the_error_names_the_extra(home: Path) -> None:
    require_module("distributed", "dask")  # this process has it; the child below does not
    script = (
        "import sys; sys.modules['distributed'] = None\n"
        "from clearnb import PipelineController\n"
        f"pipe = PipelineController(name='p', project='x', executor='dask')\n"
        f"pipe.add_step('one', notebook={TRIVIAL!r})\n"
        "pipe.start(wait=True)\n"
        "node = pipe.get_pipeline_dag()['one']\n"
        "print(node.status, node.error['reason'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=home
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("failed "), done.stdout
    assert "pip install 'clearnb[dask]'" in done.stdout
