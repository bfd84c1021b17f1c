"""A live line chart drawn by the browser: the kernel only sends the numbers.

Rendering a matplotlib figure to PNG every second took 280-460 ms of CPU on this
project's machines and, in a worker thread, still held the GIL long enough to delay
the event loop by up to 240 ms (measured while a call ran).  This chart is an
anywidget: the kernel sends a few kilobytes of JSON per refresh and the browser
draws SVG polylines.  Without a front end the data is kept in :attr:`LiveChart.series`
and nothing is drawn; :func:`webrtclab.plot.plot_timeline` draws the same numbers
from ``lab.stats()`` afterwards.
"""

from __future__ import annotations

import anywidget
import traitlets

__all__ = ["PANELS", "LiveChart"]

PANELS = (
    ("bitrate", "video kbit/s"),
    ("rtt", "RTT ms"),
    ("loss", "loss %"),
    ("latency", "frame latency ms"),
)
"""(series key, label) of each panel, top to bottom."""

_ESM = """
const NS = "http://www.w3.org/2000/svg";
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
const fmt = (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toPrecision(2));

function svg(tag, attrs, parent) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "webrtclab-chart";
  el.appendChild(root);

  function draw() {
    const width = model.get("width"), panelH = model.get("panel_height");
    const panels = model.get("panels"), series = model.get("series");
    const now = model.get("now_s"), span = model.get("window_s");
    const x0 = Math.max(0, now - span), x1 = Math.max(x0 + 10, now);
    const left = 44, right = 8, top = 18, gap = 6;
    const height = top + panels.length * (panelH + gap) + 14;
    root.replaceChildren();
    const s = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}` }, root);
    const names = Object.keys(series);
    names.forEach((name, i) => {
      const t = svg("text", { x: left + i * 110, y: 12, fill: COLORS[i % 4], "font-size": 11 }, s);
      t.textContent = "— " + name;
    });
    const sx = (t) => left + ((t - x0) / (x1 - x0)) * (width - left - right);
    panels.forEach(([key, label], p) => {
      const y0 = top + p * (panelH + gap);
      let ymax = 0;
      for (const name of names) {
        for (const [, v] of series[name][key] || []) ymax = Math.max(ymax, v);
      }
      ymax = ymax > 0 ? ymax * 1.1 : 1;
      svg("rect", { x: left, y: y0, width: width - left - right, height: panelH,
                    fill: "none", stroke: "#ccc" }, s);
      const l = svg("text", { x: left + 4, y: y0 + 11, "font-size": 10, fill: "#555" }, s);
      l.textContent = label;
      const m = svg("text", { x: left - 3, y: y0 + 9, "font-size": 9, "text-anchor": "end",
                              fill: "#555" }, s);
      m.textContent = fmt(ymax);
      const z = svg("text", { x: left - 3, y: y0 + panelH, "font-size": 9, "text-anchor": "end",
                              fill: "#555" }, s);
      z.textContent = "0";
      names.forEach((name, i) => {
        const pts = (series[name][key] || []).filter(([t]) => t >= x0)
          .map(([t, v]) => `${sx(t).toFixed(1)},${(y0 + panelH - (v / ymax) * panelH).toFixed(1)}`);
        if (pts.length) {
          svg("polyline", { points: pts.join(" "), fill: "none", stroke: COLORS[i % 4],
                            "stroke-width": 1.2, "data-series": name, "data-panel": key }, s);
        }
      });
    });
    const yb = top + panels.length * (panelH + gap) + 10;
    const a = svg("text", { x: left, y: yb, "font-size": 9, fill: "#555" }, s);
    a.textContent = x0.toFixed(0) + " s";
    const b = svg("text", { x: width - right, y: yb, "font-size": 9, fill: "#555",
                            "text-anchor": "end" }, s);
    b.textContent = x1.toFixed(0) + " s";
  }
  for (const name of ["series", "now_s", "window_s", "width", "panel_height", "panels"]) {
    model.on("change:" + name, draw);
  }
  draw();
  return () => model.off(null, draw);
}
export default { render };
"""


class LiveChart(anywidget.AnyWidget):
    """Stacked line panels over a time window; ``series`` maps a line name to its panels.

    ``series[name][key]`` is a list of ``[time_s, value]`` for each key of ``panels``.
    """

    _esm = _ESM
    series = traitlets.Dict().tag(sync=True)
    panels = traitlets.List([list(p) for p in PANELS]).tag(sync=True)
    now_s = traitlets.Float(0.0).tag(sync=True)
    window_s = traitlets.Float(60.0).tag(sync=True)
    width = traitlets.Int(480).tag(sync=True)
    panel_height = traitlets.Int(70).tag(sync=True)

    def __repr__(self) -> str:
        return f"LiveChart({sorted(self.series)}, now_s={self.now_s:.1f})"
