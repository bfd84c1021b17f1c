"""The nbval add-on in notebooks/nbval_plots.py fails a notebook whose plots do not show.

nbval runs a small notebook in a subprocess with the add-on as its conftest; each cell
is a case (a real plot, no picture, an untagged picture, a Figure as text, ...).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import nbformat

ROOT = Path(__file__).resolve().parents[1]
PNG_1PX = (  # a valid 1x1 PNG: too small to be a plot
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)

# (source, tags, expected outcome, words the failure must contain)
CASES: list[tuple[str, list[str], str, str]] = [
    (
        "import webrtclab.plot\n"
        "from IPython.display import display\n"
        "from matplotlib.figure import Figure\n"
        "fig = Figure(figsize=(2, 2))\n"
        "fig.subplots().plot([0, 1])",
        [],
        "PASSED",
        "",
    ),
    ("fig", ["plot"], "PASSED", ""),
    ("x = 1", ["plot"], "FAILED", "tagged 'plot' but showed 0 pictures"),
    ("fig", [], "FAILED", "showed a picture but is not tagged 'plot'"),
    (
        "display({'text/plain': repr(fig)}, raw=True)",
        [],
        "FAILED",
        "showed a matplotlib Figure as text",
    ),
    ("display(fig)\nfig", ["plot"], "FAILED", "showed 2 pictures (displayed twice?)"),
    ("display({'image/png': 'aGVsbG8='}, raw=True)", ["plot"], "FAILED", "not a PNG"),
    (f"display({{'image/png': '{PNG_1PX}'}}, raw=True)", ["plot"], "FAILED", "1x1 pixels"),
    ("fig", ["plot", "nbval-skip"], "SKIPPED", ""),
    ("display(fig)", ["plot"], "PASSED", ""),
]


def test_the_notebook_plugin_fails_cells_whose_plots_do_not_show(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    for source, tags, _, _ in CASES:
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = ["nbval-ignore-output", *tags]
        nb.cells.append(cell)
    nbformat.write(nb, tmp_path / "plots.ipynb")
    shutil.copy(ROOT / "notebooks" / "nbval_plots.py", tmp_path / "conftest.py")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--color=no", "--nbval"]
        + ["--nbval-current-env", "--junitxml=report.xml", "plots.ipynb"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    outcomes, reports = {}, {}
    for case in ElementTree.parse(tmp_path / "report.xml").iter("testcase"):
        cell = int(case.attrib["name"].removeprefix("Cell "))
        found = [child for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[cell] = {"failure": "FAILED", "error": "ERROR", "skipped": "SKIPPED"}.get(
            found[0].tag if found else "", "PASSED"
        )
        reports[cell] = "".join(child.text or "" for child in found)
    assert outcomes == {i: case[2] for i, case in enumerate(CASES)}, proc.stdout
    for i, (_, _, outcome, words) in enumerate(CASES):
        if outcome == "FAILED":  # the message names the notebook, the cell, and what is wrong
            assert f"plots.ipynb::Cell {i} (cell id" in reports[i], reports[i]
            assert words in reports[i], reports[i]
