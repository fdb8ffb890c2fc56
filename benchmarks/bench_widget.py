"""The controller widget in a real browser: the first render of a large DAG, and how
quickly the kernel answers while a stream of status events keeps redrawing it.

Each round opens a fresh notebook in a fresh page. The notebook is served by a private
JupyterLab on 127.0.0.1 (``tests/browser/lab.py``), and the page is headless Debian Chromium
driven through Playwright. The notebook has two cells. The imports are sent to the kernel
first and not timed. The timed cell builds a ``PipelineController`` of ``--nodes`` notebook
steps and shows ``pipe.widget()``. The steps come in layers of ten; each has one to three
random parents in the layer before (fixed seed) and most have parameter overrides, some of
them ``${parent.id}`` references. The pipeline is never run.

* **first render**: from the page calling JupyterLab's ``notebook:run-cell`` command on the
  timed cell until the first animation frame at which the page holds ``--nodes``
  ``g.cnb-node`` elements (``page.wait_for_function`` polling every frame). Both ends are
  ``performance.now()`` in the page.
* **kernel round trip**: in the same kernel, a background thread sends ``--rate`` status
  events a second for ``--duration`` seconds. Each event moves a random step on (pending,
  queued, running, completed, pending again), sets its progress, and calls every listener
  in ``pipe.listeners`` with ``PipelineEvent(STEP_STATUS, ...)``, as the controller does
  during a run. Meanwhile the page sends ``1+1`` to the kernel every 0.5 s and times each
  request until its ``done`` promise resolves, with ``performance.now()``. The same pings,
  sent for ``--baseline`` seconds before the events start, give an idle reference.
* **canvas redraws**: every draw of the canvas puts a new ``<svg>`` into it; a
  MutationObserver in the page counts them during the stream.

Printed: the medians over the rounds of the render times, the median, p95 and max of all
pings pooled over the rounds, redraws per second, and the goals. Below them, where the time
goes: the kernel's share of each ping (the reply's header date minus the request's), pings
with and without a redraw in flight, the widget's refresh time in the kernel, the page's
long tasks, one redraw timed in the page with nothing else going on, ``layout()`` timed in
this process, and the CPU each process used during the stream.

    python benchmarks/bench_widget.py [--rounds 3] [--duration 60] [--nodes 200] [--rate 10]
        [--baseline 10]
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.browser.lab import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    VIEWPORT,
    JupyterLab,
    chromium_missing_reason,
    descendant_pids,
    open_notebook,
    start_jupyter_lab,
    write_notebook,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

STEP_NOTEBOOK = REPO / "tests" / "notebooks" / "pipeline" / "trivial.ipynb"
SEED = 20240611
LAYER_WIDTH = 10
PING_INTERVAL = 0.5
"""Seconds between the starts of two pings."""
RENDER_GOAL_S = 1.0
ROUND_TRIP_GOAL_MS = 100.0
REDRAW_GOAL_PER_S = 10.0

IMPORT_CELL = """\
import json
import random
import threading
import time

from clearnb import PipelineController
from clearnb.events import STEP_STATUS, PipelineEvent
import clearnb.widgets.controller
"""

# Builds `pipe`: `nodes` notebook steps in layers of `width`, one to three random parents
# in the layer before, overrides on most steps (`${parent.id}` references on half of those
# with parents).
PIPELINE_CODE = """\
rng = random.Random({seed})
pipe = PipelineController(name="widget benchmark", project="bench", max_workers=4)
previous = []
for layer in range({layers}):
    current = []
    for index in range(min({width}, {nodes} - layer * {width})):
        name = f"layer{{layer:02d}}_step{{index}}"
        parents = rng.sample(previous, min(len(previous), rng.randint(1, 3)))
        overrides = {{}}
        if rng.random() < 0.8:
            overrides["General/x"] = layer * 100 + index
        if parents and rng.random() < 0.5:
            overrides["General/parent_id"] = "${{" + parents[0] + ".id}}"
        pipe.add_step(name, notebook={notebook!r}, parents=parents, parameter_override=overrides)
        current.append(name)
    previous = current
"""

BUILD_CELL = (
    "_began = time.perf_counter()\n"
    + PIPELINE_CODE
    + """\
_bench = {{"build": time.perf_counter() - _began}}
_began = time.perf_counter()
view = pipe.widget()
_bench["widget"] = time.perf_counter() - _began
view
"""
)

# Run in the kernel once the widget is shown: count the canvas updates and time the
# widget's refreshes (the refresher thread calls view.refresh), and define the stream.
STREAM_SETUP = """\
_stream = {"events": 0, "graph_changes": 0, "refresh": [], "done": False, "late": 0.0}
view.canvas.observe(
    lambda change: _stream.__setitem__("graph_changes", _stream["graph_changes"] + 1),
    names="graph",
)
_untimed_refresh = view.refresh


def _timed_refresh():
    began = time.perf_counter()
    try:
        _untimed_refresh()
    finally:
        _stream["refresh"].append(time.perf_counter() - began)


view.refresh = _timed_refresh
_NEXT = {"pending": "queued", "queued": "running", "running": "completed",
         "completed": "pending"}


def _events(pipe, duration, rate, seed):
    rng = random.Random(seed)
    nodes = pipe.get_pipeline_dag()
    names = list(nodes)
    began = time.perf_counter()
    count = 0
    try:
        while count / rate < duration:
            due = began + count / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            else:
                _stream["late"] = max(_stream["late"], -wait)
            node = nodes[rng.choice(names)]
            # the controller changes a step's state, then tells the listeners
            previous = node.status
            node.status = _NEXT.get(previous, "pending")
            if node.status == "queued":
                node.progress = {}
                node.job_started = node.job_ended = None
            elif node.status == "running":
                node.job_started = time.time()
                node.progress = {"cell": rng.randrange(2), "cells": 2}
            elif node.status == "completed":
                node.job_ended = time.time()
                node.progress = {"cell": 1, "cells": 2}
            else:
                node.progress = {}
                node.job_started = node.job_ended = None
            event = PipelineEvent(STEP_STATUS, node.name, node.status, previous, node.state())
            for listener in pipe.listeners:
                listener(event)
            count += 1
    finally:
        _stream["events"] = count
        _stream["done"] = True
"""

START_STREAM = (
    "threading.Thread(target=_events, args=(pipe, {duration}, {rate}, {seed}),"
    " name='benchmark events', daemon=True).start()"
)

# JavaScript run in the page.
_RUN_TIMED_CELL = """(index) => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  panel.content.activeCellIndex = index;
  panel.content.deselectAll();
  const bench = {started: performance.now(), cellDone: null, rendered: null, error: null};
  window.__cnbBench = bench;
  app.commands.execute('notebook:run-cell').then(
    () => { bench.cellDone = performance.now(); },
    (error) => { bench.error = String(error); bench.cellDone = performance.now(); },
  );
}"""

_RENDERED = """(count) => {
  const bench = window.__cnbBench;
  if (bench.rendered === null && document.querySelectorAll('g.cnb-node').length === count) {
    bench.rendered = performance.now();
  }
  return bench.rendered !== null;
}"""

_SHOWN = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const outputs = panel.content.model.cells.get(1).outputs.toJSON();
  return {nodes: document.querySelectorAll('g.cnb-node').length,
          errors: outputs.filter((o) => o.output_type === 'error')
            .map((o) => `${o.ename}: ${o.evalue}`)};
}"""

_EXECUTE = """async ({code, expressions}) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const reply = await kernel.requestExecute(
    {code, silent: false, store_history: false, user_expressions: expressions || {}}).done;
  const content = reply.content;
  if (content.status !== 'ok') {
    return {status: content.status, error: `${content.ename}: ${content.evalue}`};
  }
  const values = {};
  for (const [key, value] of Object.entries(content.user_expressions || {})) {
    values[key] = value.status === 'ok'
      ? value.data['text/plain'] : `${value.ename}: ${value.evalue}`;
  }
  return {status: 'ok', values};
}"""

# Pings the kernel every `interval` ms for `duration` ms (after running `start`, if given),
# while counting canvas redraws and the page's long tasks. For each ping: the round trip in
# the page, and the kernel's share (the execute reply's header date minus the request's,
# both wall clock on this machine).
_PINGS = """async ({duration, interval, start}) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const canvas = document.querySelector('.cnb-svg');
  let redraws = 0;
  const drawnAt = [];
  const observer = new MutationObserver((records) => {
    for (const record of records) {
      for (const node of record.addedNodes) {
        if (node.nodeName.toLowerCase() === 'svg') {
          redraws++;
          drawnAt.push(performance.now());
        }
      }
    }
  });
  observer.observe(canvas, {childList: true});
  const longTasks = [];
  const tasks = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) longTasks.push(entry.duration);
  });
  tasks.observe({type: 'longtask'});
  if (start) {
    const reply = await kernel.requestExecute(
      {code: start, silent: false, store_history: false}).done;
    const content = reply.content;
    if (content.status !== 'ok') throw new Error(`${content.ename}: ${content.evalue}`);
  }
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const pings = [];
  const kernelSide = [];
  const flights = [];
  const began = performance.now();
  let next = began;
  while (performance.now() - began < duration) {
    const future = kernel.requestExecute({code: '1+1', silent: false, store_history: false});
    const sent = performance.now();
    const reply = await future.done;
    pings.push(performance.now() - sent);
    flights.push([sent, performance.now()]);
    kernelSide.push(Date.parse(reply.header.date) - Date.parse(future.msg.header.date));
    next += interval;
    const wait = next - performance.now();
    if (wait > 0) await sleep(wait);
  }
  const elapsed = performance.now() - began;
  observer.disconnect();
  tasks.disconnect();
  const during = flights.map(([from, to]) => drawnAt.filter((t) => t >= from && t <= to).length);
  return {pings, kernelSide, redraws, elapsed, longTasks, during};
}"""


# Redraws the canvas `repeats` times from the page, as a graph update does (the canvas
# model's change:graph event, which calls the widget's draw at once), with nothing else
# going on. Per redraw: the script (draw) ms, the style and layout it then forces, and the
# time until the second animation frame after it (the frame that shows it has been painted).
_DRAW_COST = """async (repeats) => {
  const panel = window.jupyterapp.shell.currentWidget;
  let model = null;
  const visit = (widget) => {
    const view = widget._view;
    const children = view && view.model && view.model.get('children');
    for (const child of children || []) {
      if (child.get && child.get('graph') !== undefined) model = child;
    }
    for (const inner of widget.widgets || []) if (!model) visit(inner);
  };
  for (const cell of panel.content.widgets) if (cell.outputArea && !model) visit(cell.outputArea);
  if (!model) return null;
  const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
  const script = [], layout = [], frames = [];
  for (let i = 0; i < repeats; i++) {
    await frame();
    const began = performance.now();
    model.trigger('change:graph', model, model.get('graph'));
    const drawn = performance.now();
    document.body.getBoundingClientRect();
    document.querySelector('.cnb-dag').getBBox();
    const laidOut = performance.now();
    await frame();
    await frame();
    script.push(drawn - began);
    layout.push(laidOut - drawn);
    frames.push(performance.now() - began);
  }
  const elements = document.querySelector('.cnb-svg').getElementsByTagName('*').length;
  return {script, layout, frames, elements};
}"""


def cpu_seconds(lab: JupyterLab) -> dict[str, float]:
    """CPU seconds used so far, per kind of process of this benchmark, and by the machine."""
    ticks = os.sysconf("SC_CLK_TCK")
    server = lab.process.pid
    kernels = set(descendant_pids(server))
    used: dict[str, float] = {}
    for pid in [server, *kernels, *descendant_pids(os.getpid())]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if pid == server:
            kind = "jupyter server"
        elif pid in kernels:
            kind = "kernel"
        elif "chromium" in command:
            kind = "chromium " + (
                "renderer"
                if "--type=renderer" in command
                else "gpu"
                if "--type=gpu-process" in command
                else "other"
            )
        else:
            kind = "playwright"
        used[kind] = used.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    used["machine busy"] = (sum(values) - values[3] - values[4]) / ticks
    used["machine total"] = sum(values) / ticks
    return used


def kernel_json(page: Page, expression: str) -> Any:
    """The JSON value of ``json.dumps(<expression>)`` evaluated in the notebook's kernel."""
    result = page.evaluate(
        _EXECUTE, {"code": "", "expressions": {"value": f"json.dumps({expression})"}}
    )
    if result["status"] != "ok" or not result["values"]["value"].startswith("'"):
        raise RuntimeError(f"kernel expression {expression!r} failed: {result}")
    return json.loads(ast.literal_eval(result["values"]["value"]))


def kernel_run(page: Page, code: str) -> None:
    """Run ``code`` in the notebook's kernel; raise if it raised."""
    result = page.evaluate(_EXECUTE, {"code": code})
    if result["status"] != "ok":
        raise RuntimeError(f"kernel code failed: {result.get('error')}")


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def pipeline_code(template: str, nodes: int) -> str:
    """``template`` (``PIPELINE_CODE`` or ``BUILD_CELL``) for a pipeline of ``nodes`` steps."""
    return template.format(
        seed=SEED,
        layers=math.ceil(nodes / LAYER_WIDTH),
        width=LAYER_WIDTH,
        nodes=nodes,
        notebook=str(STEP_NOTEBOOK),
    )


def run_round(
    browser: Browser, lab: JupyterLab, index: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One fresh notebook and page: first render, idle pings, pings under the stream."""
    name = f"widget-{index}.ipynb"
    build = pipeline_code(BUILD_CELL, args.nodes)
    write_notebook(lab, name, [IMPORT_CELL, build], hide_code=True)
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(120_000)
    try:
        open_notebook(page, lab, name)
        began = time.perf_counter()
        kernel_run(page, IMPORT_CELL)  # what the notebook's first cell holds
        imports = time.perf_counter() - began
        page.evaluate(_RUN_TIMED_CELL, 1)
        try:
            page.wait_for_function(_RENDERED, arg=args.nodes, polling="raf", timeout=120_000)
        except PlaywrightTimeout:
            found = page.evaluate(_SHOWN)
            raise RuntimeError(f"the DAG was not drawn within 120 s: {found}") from None
        page.wait_for_function("() => window.__cnbBench.cellDone !== null", polling=50)
        marks = page.evaluate("() => window.__cnbBench")
        if marks["error"]:
            raise RuntimeError(f"running the cell failed: {marks['error']}")
        kernel = kernel_json(page, "_bench")
        result: dict[str, Any] = {
            "imports": imports,
            "render": (marks["rendered"] - marks["started"]) / 1000,
            "cell_done": (marks["cellDone"] - marks["started"]) / 1000,
            "build": kernel["build"],
            "widget": kernel["widget"],
        }
        kernel_run(page, STREAM_SETUP)
        baseline = min(args.baseline, args.duration)
        result["idle"] = page.evaluate(
            _PINGS, {"duration": baseline * 1000, "interval": PING_INTERVAL * 1000, "start": ""}
        )
        start = START_STREAM.format(duration=args.duration, rate=args.rate, seed=SEED + index)
        cpu_before = cpu_seconds(lab)
        result["stream"] = page.evaluate(
            _PINGS,
            {"duration": args.duration * 1000, "interval": PING_INTERVAL * 1000, "start": start},
        )
        cpu_after = cpu_seconds(lab)
        result["cpu"] = {kind: cpu_after[kind] - cpu_before.get(kind, 0.0) for kind in cpu_after}
        deadline = time.monotonic() + 30
        while not kernel_json(page, "_stream['done']"):
            if time.monotonic() > deadline:
                raise RuntimeError("the event stream did not end")
            time.sleep(0.2)
        result["draw"] = page.evaluate(_DRAW_COST, 10)
        result["kernel_stream"] = kernel_json(
            page,
            "{k: _stream[k] for k in ('events', 'graph_changes', 'refresh', 'late')}",
        )
        return result
    finally:
        context.close()
        lab.end_sessions()


def layout_in_process(nodes: int) -> tuple[float, int, int]:
    """Median ms of ``layout()`` for the benchmark's pipeline, its JSON bytes, and its edges."""
    from clearnb import PipelineController
    from clearnb.config import Config
    from clearnb.widgets.dag import layout

    with tempfile.TemporaryDirectory(prefix="cnb-bench-home-") as home:
        namespace: dict[str, Any] = {
            "random": random,
            "PipelineController": functools.partial(PipelineController, config=Config.at(home)),
        }
        exec(pipeline_code(PIPELINE_CODE, nodes), namespace)
        state = namespace["pipe"].state()
    times = []
    for _ in range(30):
        began = time.perf_counter()
        graph = layout(state["nodes"], state["order"])
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000, len(json.dumps(graph)), len(graph["edges"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of events")
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="status events per second")
    parser.add_argument(
        "--baseline", type=float, default=10.0, help="seconds of pings before the events"
    )
    args = parser.parse_args(argv)
    reason = chromium_missing_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1

    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cnb-bench-widget-") as folder:
        lab = start_jupyter_lab(Path(folder))
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
                )
                try:
                    for index in range(args.rounds):
                        result = run_round(browser, lab, index, args)
                        rounds.append(result)
                        stream = result["stream"]
                        print(
                            f"round {index + 1}: render {result['render']:.3f} s "
                            f"(cell done {result['cell_done']:.3f} s), pings idle "
                            f"{ping_stats(result['idle']['pings'])} ms, under events "
                            f"{ping_stats(stream['pings'])} ms (median / p95 / max), "
                            f"{stream['redraws']} redraws in {stream['elapsed'] / 1000:.1f} s",
                            file=sys.stderr,
                        )
                finally:
                    browser.close()
        finally:
            lab.stop()
    layout_ms, graph_bytes, edges = layout_in_process(args.nodes)
    report(rounds, args, layout_ms, graph_bytes, edges)
    return 0


def report(
    rounds: list[dict[str, Any]],
    args: argparse.Namespace,
    layout_ms: float,
    graph_bytes: int,
    edges: int,
) -> None:
    """Print the table: medians over the rounds, pings pooled, goals, where the time goes."""

    def median_of(key: str) -> float:
        return float(statistics.median(r[key] for r in rounds))

    def pooled(part: str, key: str) -> list[float]:
        return [float(value) for r in rounds for value in r[part][key]]

    def per_second(count: float, r: dict[str, Any]) -> float:
        return count / (float(r["stream"]["elapsed"]) / 1000)

    def met(ok: bool) -> str:
        return "met" if ok else "not met"

    def row(measure: str, value: str, goal: str = "") -> None:
        print(f"{measure:46} {value:>22}  {goal}".rstrip())

    render = median_of("render")
    pings = pooled("stream", "pings")
    redraws = statistics.median(per_second(r["stream"]["redraws"], r) for r in rounds)
    changes = statistics.median(per_second(r["kernel_stream"]["graph_changes"], r) for r in rounds)
    refresh_ms = [t * 1000 for r in rounds for t in r["kernel_stream"]["refresh"]]
    long_tasks = pooled("stream", "longTasks")
    draws = [r["draw"] for r in rounds if r["draw"]]
    print(
        f"controller widget, {args.nodes}-step DAG, {args.rounds} rounds (medians; pings pooled); "
        f"{args.rate:g} status events/s for {args.duration:g} s per round"
    )
    print(f"{'measure':46} {'value':>22}  goal")
    row(
        "first render (run cell -> all steps drawn)",
        f"{render:.3f} s",
        f"<= {RENDER_GOAL_S:.1f} s ({met(render <= RENDER_GOAL_S)})",
    )
    row("  cell finished (execute reply in the page)", f"{median_of('cell_done'):.3f} s")
    row("  kernel: build the pipeline", f"{median_of('build'):.3f} s")
    row("  kernel: pipe.widget()", f"{median_of('widget'):.3f} s")
    row("imports in a new kernel (before, not timed)", f"{median_of('imports'):.3f} s")
    row("kernel round trip idle, ms (med/p95/max)", ping_stats(pooled("idle", "pings")))
    row("  kernel's share, ms (med/p95/max)", ping_stats(pooled("idle", "kernelSide")))
    row(
        "kernel round trip under events (med/p95/max)",
        ping_stats(pings),
        f"max <= {ROUND_TRIP_GOAL_MS:.0f} ms ({met(max(pings) <= ROUND_TRIP_GOAL_MS)})",
    )
    row("  samples", f"{len(pings)}")
    row("  kernel's share, ms (med/p95/max)", ping_stats(pooled("stream", "kernelSide")))
    during = pooled("stream", "during")
    quiet = [p for p, d in zip(pings, during, strict=True) if d == 0]
    crossed = [p for p, d in zip(pings, during, strict=True) if d > 0]
    slow = [d for p, d in zip(pings, during, strict=True) if p > ROUND_TRIP_GOAL_MS]
    if quiet:
        row("  pings with no redraw in flight: n, med/max", f"{len(quiet)}, {median_max(quiet)}")
    if crossed:
        row("  pings with a redraw in flight: n, med/max", f"{len(crossed)}, {median_max(crossed)}")
    row(
        f"  pings over {ROUND_TRIP_GOAL_MS:.0f} ms (with a redraw in flight)",
        f"{len(slow)} ({sum(1 for d in slow if d > 0)})",
    )
    row(
        "canvas redraws in the page under events",
        f"{redraws:.1f}/s",
        f"<= {REDRAW_GOAL_PER_S:.0f}/s ({met(redraws <= REDRAW_GOAL_PER_S)})",
    )
    row("  graph updates sent by the kernel", f"{changes:.1f}/s")
    row(
        "  events sent per round",
        f"{statistics.median(r['kernel_stream']['events'] for r in rounds):.0f}",
    )
    row(
        "  widget refresh in the kernel, ms (med/p95/max)",
        ping_stats(refresh_ms) if refresh_ms else "-",
    )
    row(
        "  page long tasks (count/med/max ms)",
        f"{len(long_tasks)} / {statistics.median(long_tasks) if long_tasks else 0:.0f} / "
        f"{max(long_tasks, default=0):.0f}",
    )
    if draws:
        script = [v for d in draws for v in d["script"]]
        forced = [v for d in draws for v in d["layout"]]
        frames = [v for d in draws for v in d["frames"]]
        row(
            "one redraw in the page, quiet (median ms)",
            f"{statistics.median(script):.1f} + {statistics.median(forced):.1f}",
        )
        row("  (draw script + style/layout; until painted)", f"{statistics.median(frames):.1f}")
        row("  SVG elements in the canvas", f"{draws[0]['elements']}")
    row(f"layout() of {args.nodes} steps in this process", f"{layout_ms:.1f} ms")
    row("graph sent per update", f"{graph_bytes / 1000:.0f} kB, {edges} edges")
    kinds = sorted({k for r in rounds for k in r["cpu"]} - {"machine busy", "machine total"})
    spans = [r["stream"]["elapsed"] / 1000 for r in rounds]
    shares = []
    for kind in kinds:
        use = statistics.median(
            r["cpu"].get(kind, 0.0) / s for r, s in zip(rounds, spans, strict=True)
        )
        shares.append(f"{kind} {use * 100:.0f}%")
    busy = statistics.median(r["cpu"]["machine busy"] / r["cpu"]["machine total"] for r in rounds)
    print(f"CPU under events (100% = one core): {', '.join(shares)}")
    print(f"machine busy under events: {busy * 100:.0f}% of all its cores")
    late = max(r["kernel_stream"]["late"] for r in rounds)
    if late > 0.05:
        print(f"note: the event thread fell up to {late * 1000:.0f} ms behind its schedule")


def median_max(values: list[float]) -> str:
    """``median / max`` of ``values``, one decimal."""
    return f"{statistics.median(values):.1f} / {max(values):.1f}"


def ping_stats(values: list[float]) -> str:
    """``median / p95 / max`` of ``values``, one decimal."""
    return f"{statistics.median(values):.1f} / {percentile(values, 0.95):.1f} / {max(values):.1f}"


if __name__ == "__main__":
    sys.exit(main())
