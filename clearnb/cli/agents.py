"""``clearnb agent`` (serve queues) and ``clearnb queue ls``."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from clearnb.cli.format import CommandError, duration_text, echo, printable
from clearnb.cli.lookup import backend_or_exit
from clearnb.errors import ClearnbError


@click.command("agent")
@click.option(
    "--queue",
    "queues",
    multiple=True,
    required=True,
    help="A queue to serve (repeat for several; the first has priority).",
)
@click.option("--workers", default=1, show_default=True, help="Tasks run at the same time.")
@click.option(
    "--lease",
    default=30.0,
    show_default=True,
    help="Seconds a running task stays this agent's without a heartbeat.",
)
@click.option("--name", default=None, help="The agent's name (default: host:pid).")
def agent_command(queues: tuple[str, ...], workers: int, lease: float, name: str | None) -> None:
    """Serve queues: run the tasks sent to them, here, until stopped (Ctrl-C).

    The first Ctrl-C stops taking tasks and lets the running ones finish; a second one
    (or SIGTERM) stops them too.
    """
    import signal

    from clearnb.executors.agent import Agent

    try:
        agent = Agent(queues, workers=workers, lease=lease, name=name)
    except ClearnbError as exc:
        raise CommandError(str(exc)) from exc
    interrupts = 0

    def on_interrupt(signum: int, frame: Any) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            echo("stopping: no new tasks; Ctrl-C again to stop the running ones", err=True)
            agent.stop()
        else:
            agent.stop(abort="the agent was stopped")

    def on_term(signum: int, frame: Any) -> None:
        agent.stop(abort="the agent was stopped")

    signal.signal(signal.SIGINT, on_interrupt)
    signal.signal(signal.SIGTERM, on_term)
    try:
        agent.run()
    except ClearnbError as exc:
        raise CommandError(str(exc)) from exc


@click.group()
def queue() -> None:
    """Queues: what waits in them and which agents serve them."""


@queue.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def queue_ls_command(as_json: bool) -> None:
    """List queues with their waiting tasks, and the agents seen with their heartbeat."""
    from clearnb.backend import Backend
    from clearnb.executors.queue import AGENT_SEEN_WITHIN

    store = backend_or_exit(Backend).store
    store.expire_leases()
    waiting: dict[str, list[Any]] = {}
    for record in store.queued_tasks():
        waiting.setdefault(record.queue or "", []).append(record)
    workers = store.get_workers()
    now = time.time()
    names = sorted({*waiting, *(q for w in workers for q in w.queues)})
    if as_json:
        data = {
            "queues": {
                name: {
                    "waiting": [r.id for r in waiting.get(name, [])],
                    "agents": [w.id for w in workers if name in w.queues],
                }
                for name in names
            },
            "agents": [_worker_dict(w, now) for w in workers],
        }
        echo(json.dumps(data, indent=2, default=str))
        return
    if not names:
        echo(
            "No task waits in a queue and no agent was seen. Send a task to a queue with "
            "`clearnb task enqueue ID --queue Q`; serve it with `clearnb agent --queue Q`."
        )
        return
    echo(f"{'QUEUE':20}  {'WAITING':>7}  {'OLDEST':>8}  AGENTS")
    for name in names:
        queued = waiting.get(name, [])
        oldest = duration_text(queued[0].enqueued, now) if queued else "-"
        live = [
            printable(w.id)
            for w in workers
            if name in w.queues and w.status != "stopped" and now - w.last_seen <= AGENT_SEEN_WITHIN
        ]
        serving = ", ".join(live) or click.style("none: no agent serves it", fg="yellow")
        echo(f"{printable(name):20}  {len(queued):>7}  {oldest:>8}  {serving}")
    if workers:
        echo("")
        echo(f"{'AGENT':28}  {'STATUS':8}  {'LAST SEEN':>9}  {'RUNNING':>7}  QUEUES")
        for w in workers:
            status = (
                w.status
                if now - w.last_seen <= AGENT_SEEN_WITHIN or w.status == "stopped"
                else "lost"
            )
            seen = f"{now - w.last_seen:.0f}s ago"
            echo(
                f"{printable(w.id):28}  {status:8}  {seen:>9}  "
                f"{len(w.running):>3}/{w.capacity:<3}  " + ", ".join(printable(q) for q in w.queues)
            )


def _worker_dict(worker: Any, now: float) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(worker)
    data["seconds_since_seen"] = round(now - worker.last_seen, 3)
    return data
