// The pipeline's DAG, drawn as SVG: one box per step coloured by status, arrows parent to
// child, a tooltip with the step's overrides, a click selects a step.
const SVG = "http://www.w3.org/2000/svg";

const COLOURS = {
  pending: { fill: "#f3f4f6", stroke: "#6b7280", text: "#374151" },
  queued: { fill: "#e0f2fe", stroke: "#38bdf8", text: "#075985" },
  running: { fill: "#dbeafe", stroke: "#1d4ed8", text: "#1e3a8a" },
  completed: { fill: "#dcfce7", stroke: "#15803d", text: "#14532d" },
  failed: { fill: "#fee2e2", stroke: "#dc2626", text: "#7f1d1d" },
  aborted: { fill: "#ffedd5", stroke: "#ea580c", text: "#7c2d12" },
  cached: { fill: "#f3e8ff", stroke: "#9333ea", text: "#581c87" },
  skipped: { fill: "#f9fafb", stroke: "#9ca3af", text: "#6b7280" },
};

function el(tag, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

function elapsed(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return seconds < 60 ? `${seconds.toFixed(1)}s` : `${(seconds / 60).toFixed(1)}m`;
}

function statusText(node) {
  let progress = node.progress && node.progress.cells
    ? ` · cell ${node.progress.cell + 1}/${node.progress.cells}` : "";
  if (node.status === "queued" && node.progress && node.progress.waiting) {
    progress = ` · no agent on ${node.progress.queue}`;
  }
  const time = node.elapsed !== null && node.elapsed !== undefined ? ` · ${elapsed(node.elapsed)}` : "";
  return `${node.status}${progress}${time}`;
}

function shapeKey(graph) {
  // What forces a full redraw: the steps, their places and labels, the edges.
  return JSON.stringify([
    graph.width, graph.height, graph.edges,
    graph.nodes.map((n) => [n.name, n.x, n.y, n.w, n.h, n.labels, n.overrides]),
  ]);
}

// Update the drawn steps in place (status, progress, time): one event changes one step,
// and rebuilding every element for it would hold the page (and the kernel's replies).
function update(model, drawn) {
  const graph = model.get("graph");
  const selected = model.get("selected");
  for (const node of graph.nodes) {
    const parts = drawn.parts[node.name];
    if (!parts) continue;
    const colour = COLOURS[node.status] || COLOURS.pending;
    const key = `${node.status}|${statusText(node)}|${node.name === selected}`;
    parts.node = node;
    if (parts.key === key) continue;
    parts.key = key;
    parts.group.setAttribute("class",
      `cnb-node cnb-${node.status}${node.name === selected ? " cnb-selected" : ""}`);
    parts.group.setAttribute("data-status", node.status);
    parts.rect.setAttribute("fill", colour.fill);
    parts.rect.setAttribute("stroke", colour.stroke);
    parts.rect.setAttribute("stroke-width", node.name === selected ? "3" : "1.6");
    parts.rect.setAttribute("stroke-dasharray", node.status === "skipped" ? "5 3" : "");
    parts.status.setAttribute("fill", colour.text);
    parts.status.textContent = statusText(node);
    const done = node.status === "running" && node.progress && node.progress.cells
      ? (node.progress.cell + 1) / node.progress.cells : 0;
    parts.bar.setAttribute("width", `${node.w * done}`);
    parts.bar.setAttribute("fill", colour.stroke);
  }
}

function draw(model, root, tooltip) {
  const graph = model.get("graph") || { nodes: [], edges: [], width: 0, height: 0 };
  const selected = model.get("selected");
  const drawn = { key: shapeKey(graph), parts: {} };
  root.replaceChildren();
  const width = Math.max(graph.width, 200);
  const height = Math.max(graph.height, 80);
  const svg = el("svg", {
    width, height, viewBox: `0 0 ${width} ${height}`, class: "cnb-dag", role: "img",
    "aria-label": "pipeline steps",
  }, root);
  const defs = el("defs", {}, svg);
  const marker = el("marker", {
    id: "cnb-arrow", viewBox: "0 0 10 10", refX: "10", refY: "5",
    markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse",
  }, defs);
  el("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#6b7280" }, marker);
  const byName = Object.fromEntries(graph.nodes.map((n) => [n.name, n]));
  for (const [from, to] of graph.edges) {
    const a = byName[from], b = byName[to];
    if (!a || !b) continue;
    const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2;
    const mid = (x1 + x2) / 2;
    el("path", {
      d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`,
      fill: "none", stroke: "#9ca3af", "stroke-width": "1.5", "marker-end": "url(#cnb-arrow)",
      class: "cnb-edge",
    }, svg);
  }
  for (const first of graph.nodes) {
    const node = first;
    const colour = COLOURS[node.status] || COLOURS.pending;
    const group = el("g", {
      class: `cnb-node cnb-${node.status}${node.name === selected ? " cnb-selected" : ""}`,
      "data-step": node.name, "data-status": node.status, tabindex: "0",
      transform: `translate(${node.x}, ${node.y})`,
    }, svg);
    const rect = el("rect", {
      width: node.w, height: node.h, rx: "8", fill: colour.fill, stroke: colour.stroke,
      "stroke-width": node.name === selected ? "3" : "1.6",
      "stroke-dasharray": node.status === "skipped" ? "5 3" : "",
    }, group);
    const title = el("text", { x: "10", y: "20", class: "cnb-name", fill: "#111827" }, group);
    title.textContent = node.name;
    let line = 36;
    for (const label of (node.labels || []).slice(0, 2)) {
      const text = el("text", { x: "10", y: `${line}`, class: "cnb-param", fill: "#4b5563" }, group);
      text.textContent = label;
      line += 13;
    }
    const status = el("text", { x: "10", y: `${node.h - 9}`, class: "cnb-status", fill: colour.text }, group);
    status.textContent = statusText(node);
    const done = node.status === "running" && node.progress && node.progress.cells
      ? (node.progress.cell + 1) / node.progress.cells : 0;
    const bar = el("rect", { x: "0", y: `${node.h - 4}`, width: `${node.w * done}`, height: "4",
      rx: "2", fill: colour.stroke }, group);
    const parts = {
      group, rect, status, bar, node,
      key: `${node.status}|${statusText(node)}|${node.name === selected}`,
    };
    drawn.parts[node.name] = parts;
    const place = (event) => {
      const wide = tooltip.offsetWidth || 260;
      const left = event.clientX + 14 + wide > window.innerWidth
        ? event.clientX - 14 - wide : event.clientX + 14;
      tooltip.style.left = `${Math.max(4, left)}px`;
      tooltip.style.top = `${event.clientY + 14}px`;
    };
    group.addEventListener("mousemove", place);
    group.addEventListener("mouseenter", (event) => {
      tooltip.replaceChildren();
      const head = document.createElement("div");
      head.className = "cnb-tooltip-name";
      head.textContent = node.name;
      tooltip.appendChild(head);
      const current = parts.node;
      const lines = current.overrides && current.overrides.length ? current.overrides : ["(no overridden parameters)"];
      for (const text of lines) {
        const row = document.createElement("div");
        row.className = "cnb-tooltip-param";
        row.textContent = text;
        tooltip.appendChild(row);
      }
      tooltip.style.display = "block";
      place(event);
    });
    group.addEventListener("mouseleave", () => { tooltip.style.display = "none"; });
    group.addEventListener("click", () => {
      model.set("selected", node.name === model.get("selected") ? "" : node.name);
      model.save_changes();
    });
  }
  return drawn;
}

function legend(container, statuses) {
  container.replaceChildren();
  for (const status of statuses) {
    const colour = COLOURS[status];
    const item = document.createElement("span");
    item.className = "cnb-legend-item";
    const swatch = document.createElement("span");
    swatch.className = "cnb-swatch";
    swatch.style.background = colour.fill;
    swatch.style.borderColor = colour.stroke;
    item.appendChild(swatch);
    item.appendChild(document.createTextNode(status));
    container.appendChild(item);
  }
}

function render({ model, el: host }) {
  host.classList.add("cnb-canvas");
  const frame = document.createElement("div");
  frame.className = "cnb-frame";
  const canvas = document.createElement("div");
  canvas.className = "cnb-svg";
  const tooltip = document.createElement("div");
  tooltip.className = "cnb-tooltip";
  tooltip.style.display = "none";
  const key = document.createElement("div");
  key.className = "cnb-legend";
  frame.appendChild(canvas);
  frame.appendChild(tooltip);
  host.appendChild(frame);
  host.appendChild(key);
  let drawn = draw(model, canvas, tooltip);
  const redraw = () => {
    const graph = model.get("graph") || { nodes: [], edges: [], width: 0, height: 0 };
    if (drawn && drawn.key === shapeKey(graph)) {
      update(model, drawn);
    } else {
      drawn = draw(model, canvas, tooltip);
    }
  };
  legend(key, Object.keys(COLOURS));
  model.on("change:graph", redraw);
  model.on("change:selected", redraw);
  return () => {
    model.off("change:graph", redraw);
    model.off("change:selected", redraw);
  };
}

export default { render };
