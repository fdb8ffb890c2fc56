"""Where a pipeline's steps run, as the user names it: here, or on a Dask cluster.

``executor=`` (and ``CLEARNB_EXECUTOR``, ``clearnb run --executor``) takes ``"local"``
(the default: a kernel pool in the controller's process, and agents for steps with an
``execution_queue``), ``"dask"`` (a ``LocalCluster`` of worker processes on this machine),
``"dask://HOST[:PORT]"`` (the scheduler of a running cluster), a ``distributed.Client`` or
a Dask cluster object (``LocalCluster``, dask-jobqueue's ``SLURMCluster``, dask-kubernetes'
``KubeCluster``). Nothing here imports Dask: the choice is plain data, stored with the
pipeline as its URL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clearnb.errors import ConfigurationError

EXECUTOR_ENV = "CLEARNB_EXECUTOR"
"""The environment variable naming the executor of pipelines that name none."""
LOCAL = "local"
DASK = "dask"
DASK_SCHEME = "dask://"
DEFAULT_SCHEDULER_PORT = 8786
"""The port ``dask scheduler`` listens on unless told otherwise."""
ACCEPTED = (
    "'local', 'dask' (a cluster of worker processes on this machine), "
    "'dask://HOST[:PORT]' (a running scheduler), a distributed.Client or a Dask cluster object"
)


@dataclass(frozen=True)
class ExecutorChoice:
    """Where steps run: ``kind`` is ``local`` or ``dask``; a Dask cluster is reached at
    ``address`` (``tcp://host:port``; None: one is started on this machine), or through
    the ``cluster`` object given (a ``distributed.Client`` or a cluster)."""

    kind: str
    address: str | None = None
    cluster: Any = field(default=None, compare=False, repr=False)

    @property
    def is_dask(self) -> bool:
        """True for a Dask cluster."""
        return self.kind == DASK

    @property
    def url(self) -> str:
        """How the choice is written in a pipeline file: ``local``, ``dask``,
        ``dask://host:port``."""
        if not self.is_dask:
            return LOCAL
        if self.address is None:
            return DASK
        return DASK_SCHEME + self.address.split("://", 1)[-1]


def executor_choice(value: Any) -> ExecutorChoice | None:
    """The executor ``value`` names (see the module's help); None for ``None`` or ``""``.

    Raises :class:`~clearnb.errors.ConfigurationError` naming what is accepted.
    """
    if value is None or isinstance(value, ExecutorChoice):
        return value
    if isinstance(value, str):
        return _parsed(value.strip())
    address = _cluster_address(value)
    if address is None:
        raise ConfigurationError(
            f"executor={value!r} is not an executor: pass {ACCEPTED}", executor=repr(value)
        )
    return ExecutorChoice(DASK, address, value)


def executor_from_env(environ: Mapping[str, str] | None = None) -> ExecutorChoice | None:
    """The executor ``CLEARNB_EXECUTOR`` names in ``environ`` (``os.environ``), or None."""
    env = os.environ if environ is None else environ
    try:
        return executor_choice(env.get(EXECUTOR_ENV))
    except ConfigurationError as exc:
        raise ConfigurationError(f"{EXECUTOR_ENV}: {exc}", variable=EXECUTOR_ENV) from exc


def _parsed(text: str) -> ExecutorChoice | None:
    if not text:
        return None
    lowered = text.lower()
    if lowered == LOCAL:
        return ExecutorChoice(LOCAL)
    if lowered == DASK:
        return ExecutorChoice(DASK)
    if lowered.startswith(DASK_SCHEME):
        where = text[len(DASK_SCHEME) :].rstrip("/")
        host, _, port = where.rpartition(":") if ":" in where else (where, "", "")
        if not host or "/" in where or (port and not port.isdigit()):
            raise ConfigurationError(
                f"executor {text!r} does not name a scheduler: write dask://HOST or "
                f"dask://HOST:PORT (the port defaults to {DEFAULT_SCHEDULER_PORT})",
                executor=text,
            )
        return ExecutorChoice(DASK, f"tcp://{host}:{port or DEFAULT_SCHEDULER_PORT}")
    raise ConfigurationError(f"executor {text!r} is not known: pass {ACCEPTED}", executor=text)


def _cluster_address(value: Any) -> str | None:
    """The scheduler address of a ``distributed.Client`` or a Dask cluster, else None."""
    if hasattr(value, "submit") and hasattr(value, "scheduler"):  # a Client
        address = getattr(value.scheduler, "address", None)
    else:  # a cluster: LocalCluster, SLURMCluster, KubeCluster, ...
        address = getattr(value, "scheduler_address", None)
    return address if isinstance(address, str) and address else None
