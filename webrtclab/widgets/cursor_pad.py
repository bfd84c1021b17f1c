"""A pad that reports the pointer position and draws other users' cursors.

ipywidgets has no widget with pointer events, so this one is an anywidget: a few
lines of JavaScript shipped as a string, rendered by anywidget's prebuilt
JupyterLab extension (no build step, nothing fetched at run time).  Without a
front end (a script, nbval) it is a plain model: set :attr:`CursorPad.position`
from Python and observers run as they would for the pointer.
"""

from __future__ import annotations

import math
from typing import Any

import anywidget
import traitlets

from ..exceptions import ConfigurationError

__all__ = ["CursorPad"]

_ESM = """
function render({ model, el }) {
  const pad = document.createElement("div");
  pad.className = "webrtclab-cursor-pad";
  const hint = document.createElement("span");
  hint.className = "webrtclab-cursor-hint";
  hint.textContent = "move the pointer here";
  pad.appendChild(hint);
  el.appendChild(pad);
  const dots = new Map();

  function dot(name, cls) {
    let d = dots.get(name);
    if (!d) {
      d = document.createElement("div");
      d.className = "webrtclab-cursor " + cls;
      d.dataset.name = name;
      const label = document.createElement("span");
      label.textContent = name;
      d.appendChild(label);
      pad.appendChild(d);
      dots.set(name, d);
    }
    return d;
  }
  function place(d, xy) {
    d.style.left = (xy[0] * 100).toFixed(2) + "%";
    d.style.top = (xy[1] * 100).toFixed(2) + "%";
  }
  function draw() {
    const pad_w = pad.style;
    pad_w.width = model.get("width") + "px";
    pad_w.height = model.get("height") + "px";
    const position = model.get("position");
    if (position) place(dot(model.get("label"), "local"), position);
    const remote = model.get("remote");
    for (const [name, d] of dots) {
      if (name !== model.get("label") && !(name in remote)) { d.remove(); dots.delete(name); }
    }
    for (const [name, xy] of Object.entries(remote)) place(dot(name, "remote"), xy);
  }
  // Coalesce pointer moves to one model update per animation frame (<= 60/s).
  let pending = null;
  pad.addEventListener("pointermove", (event) => {
    const box = pad.getBoundingClientRect();
    const x = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
    const y = Math.min(1, Math.max(0, (event.clientY - box.top) / box.height));
    if (pending === null) {
      requestAnimationFrame(() => {
        model.set("position", pending);
        model.save_changes();
        pending = null;
      });
    }
    pending = [x, y];
  });
  model.on("change:position", draw);
  model.on("change:remote", draw);
  model.on("change:width", draw);
  model.on("change:height", draw);
  draw();
  return () => { model.off(null, draw); };
}
export default { render };
"""

_CSS = """
.webrtclab-cursor-pad {
  position: relative; overflow: hidden; cursor: crosshair; touch-action: none;
  border: 1px solid var(--jp-border-color1, #999); border-radius: 4px;
  background: var(--jp-layout-color2, #f3f3f3);
}
.webrtclab-cursor-hint {
  position: absolute; left: 6px; top: 4px; font-size: 11px; pointer-events: none;
  color: var(--jp-ui-font-color2, #777);
}
.webrtclab-cursor {
  position: absolute; width: 10px; height: 10px; margin: -5px 0 0 -5px;
  border-radius: 50%; pointer-events: none;
}
.webrtclab-cursor.local { background: #1f77b4; }
.webrtclab-cursor.remote { background: #d62728; }
.webrtclab-cursor span {
  position: absolute; left: 12px; top: -4px; font-size: 11px; white-space: nowrap;
  color: var(--jp-ui-font-color1, #222);
}
"""


def _check_xy(value: Any, what: str) -> list[float]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or not all(math.isfinite(v) and 0 <= v <= 1 for v in value)
    ):
        raise ConfigurationError(f"{what} must be [x, y] with 0 <= x, y <= 1, got {value!r}")
    return [float(value[0]), float(value[1])]


class CursorPad(anywidget.AnyWidget):
    """Pointer positions in, other users' cursors out; coordinates are 0-1 of the pad.

    ``position`` is where the local pointer is (set by the browser, or from Python);
    ``remote`` maps a user name to the last position received from that user.
    """

    _esm = _ESM
    _css = _CSS
    # Any, validated below: every bad value gets the same ConfigurationError.
    position = traitlets.Any(None, allow_none=True).tag(sync=True)
    remote = traitlets.Any({}).tag(sync=True)
    label = traitlets.Unicode("you").tag(sync=True)
    width = traitlets.Int(240).tag(sync=True)
    height = traitlets.Int(160).tag(sync=True)

    @traitlets.validate("position")
    def _valid_position(self, proposal: dict[str, Any]) -> list[float] | None:
        value = proposal["value"]
        return None if value is None else _check_xy(value, "cursor position")

    @traitlets.validate("remote")
    def _valid_remote(self, proposal: dict[str, Any]) -> dict[str, list[float]]:
        value = proposal["value"]
        if not isinstance(value, dict):
            raise ConfigurationError(f"remote cursors must be a dict of [x, y], got {value!r}")
        return {str(k): _check_xy(v, f"cursor of {k!r}") for k, v in value.items()}

    def __repr__(self) -> str:
        return f"CursorPad(position={self.position!r}, remote={self.remote!r})"
