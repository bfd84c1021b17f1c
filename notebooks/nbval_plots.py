"""nbval add-on: the notebooks' plots must show as pictures when nbval runs them.

Plot cells are tagged ``nbval-ignore-output`` (pictures differ from run to run), so nbval
alone passes a cell that shows ``<Figure size 700x400 with 1 Axes>`` instead of a plot.
After nbval has run a cell (and only if it passed), this plugin looks at the outputs
nbval received from the kernel (``IPyNbCell.test_outputs``; nothing is executed twice):

* a cell tagged ``plot`` (or whose stored outputs hold a picture) must show exactly one
  picture: a PNG that decodes, or an SVG;
* a cell that shows a picture must be tagged ``plot``, so the tags stay in sync;
* no cell may show a matplotlib Figure as text (its ``<Figure size ...>`` repr with no
  picture), tagged or not.

To add a plot to a notebook, end the cell with the Figure and add the ``plot`` tag
(JupyterLab: property inspector, "Cell Tags").
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Generator, Mapping
from typing import Any

import pytest
from nbval.plugin import IPyNbCell, NbCellError

PLOT_TAG = "plot"
PICTURE_TYPES = ("image/png", "image/svg+xml")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURE_AS_TEXT = re.compile(r"<Figure size [\d.]+x[\d.]+ with \d+ Axes>")


def _data(output: Mapping[str, Any]) -> Mapping[str, Any]:
    return output.get("data", {}) if output.get("output_type") != "stream" else {}


def _picture_problem(mime: str, payload: Any) -> str | None:
    """Why ``payload`` is not a real picture of type ``mime`` (None when it is)."""
    if isinstance(payload, list):  # multi-line strings as stored in .ipynb files
        payload = "".join(payload)
    if not isinstance(payload, str) or not payload.strip():
        return f"an empty {mime}"
    if mime == "image/svg+xml":
        return None if "<svg" in payload else "an image/svg+xml without <svg"
    try:
        png = base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        return "an image/png that is not base64"
    # signature, then the IHDR chunk: length, type, width, height
    if len(png) < 24 or not png.startswith(PNG_SIGNATURE) or png[12:16] != b"IHDR":
        return "an image/png that is not a PNG"
    width, height = struct.unpack(">II", png[16:24])
    if width < 2 or height < 2:
        return f"an image/png of {width}x{height} pixels"
    return None


def _pictures(outputs: list[Any]) -> tuple[int, list[str]]:
    """How many outputs show a picture, and what is wrong with the pictures that fail."""
    shown, problems = 0, []
    for output in outputs:
        found = [mime for mime in PICTURE_TYPES if mime in _data(output)]
        if not found:
            continue
        failures = [_picture_problem(mime, _data(output)[mime]) for mime in found]
        if any(failure is None for failure in failures):
            shown += 1
        else:
            problems += [failure for failure in failures if failure is not None]
    return shown, problems


def _describe(outputs: list[Any]) -> str:
    if not outputs:
        return "nothing"
    parts = []
    for output in outputs:
        data = _data(output)
        text = data.get("text/plain") if "text/plain" in data else output.get("text", "")
        text = "".join(text) if isinstance(text, list) else str(text)
        mimes = ", ".join(data) or output.get("output_type", "?")
        parts.append(f"{mimes}: {text[:80]!r}")
    return "; ".join(parts)


def plot_cell_problem(item: IPyNbCell) -> str | None:
    """What is wrong with the pictures of a cell nbval has just run (None if nothing)."""
    outputs = item.test_outputs
    if outputs is None:
        # Do not pass silently if nbval stops recording outputs where we read them.
        raise RuntimeError(
            f"{item.nodeid}: nbval recorded no outputs (IPyNbCell.test_outputs); "
            "notebooks/nbval_plots.py must be updated for this nbval version"
        )
    cell = item.cell
    where = f"{item.nodeid} (cell id {cell.get('id', '?')})"
    tags = cell.metadata.get("tags", [])
    stored, _ = _pictures(cell.get("outputs", []))
    expected = PLOT_TAG in tags or stored > 0
    shown, problems = _pictures(outputs)
    if problems:
        return f"{where} showed {', '.join(problems)}"
    as_text = [
        output
        for output in outputs
        if not any(mime in _data(output) for mime in PICTURE_TYPES)
        and FIGURE_AS_TEXT.search(str(_data(output).get("text/plain", "")))
    ]
    if as_text:
        return (
            f"{where} showed a matplotlib Figure as text, not as a picture: "
            f"{_describe(as_text)} (is webrtclab imported? it registers the PNG printer)"
        )
    if expected and shown != 1:
        why = f"is tagged {PLOT_TAG!r}" if PLOT_TAG in tags else "stores a picture"
        hint = " (displayed twice?)" if shown > 1 else ""
        return f"{where} {why} but showed {shown} pictures{hint}: {_describe(outputs)}"
    if not expected and shown:
        return (
            f"{where} showed a picture but is not tagged {PLOT_TAG!r}: "
            "add the tag so that every run checks the picture is there"
        )
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """After nbval has run a cell without error, check its pictures."""
    yield
    if isinstance(item, IPyNbCell):
        problem = plot_cell_problem(item)
        if problem is not None:
            raise NbCellError(item.cell_num, problem, item.cell.source)
