"""Notebook 02 in a real JupyterLab, driven by a real browser.

Starts JupyterLab on 127.0.0.1 (a free port, a token, a temporary root with a copy
of ``notebooks/02-first-call.ipynb`` and temporary config, data and settings
directories), opens the notebook in headless Debian Chromium through Playwright,
runs the cells above "Events and closing", and then, while the call runs and the
kernel is idle, checks the panel as a user would: the widgets rendered (not
"Loading widget..."), the numbers change, a click on Send is handled and the message
shows up in the log, the pointer on the pad travels to the other peer, a preset
chosen in the menu is applied.  A screenshot goes to ``artifacts/``.  Then it runs the
remaining cells (which close the lab) and shuts the server down, checking that no
process of its group is left.

Skipped when /usr/bin/chromium is missing, except in CI (``CI`` set), where that fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import require_system

CHROMIUM = Path("/usr/bin/chromium")
require_system(CHROMIUM, "chromium", "the JupyterLab test")

from playwright.sync_api import Page, sync_playwright  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "02-first-call.ipynb"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SPLIT_AT = "## Events and closing"  # the browser checks run before this cell
START_S = 60.0  # upper bound for the server to answer
CELLS_MS = 90_000  # upper bound for a batch of cells (the call alone takes ~15 s)
WAIT_MS = 10_000  # upper bound for one browser-side condition

# JupyterLab's own news and update checks would open a toast over the page (and try
# to reach the internet).
NOTIFICATION_SETTINGS = {"fetchNews": "false", "checkForUpdates": False}


@dataclass
class Server:
    url: str
    token: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api(server: Server, path: str, method: str = "GET") -> int:
    request = urllib.request.Request(
        f"{server.url}{path}",
        method=method,
        headers={"Authorization": f"token {server.token}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.status)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps(NOTIFICATION_SETTINGS))
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    token = secrets.token_hex(16)
    log = tmp_path / "jupyterlab.log"
    # A port picked here may be taken before the server binds it: try a few.
    for _ in range(3):
        port = free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "jupyterlab",
                    "--no-browser",
                    "--ServerApp.ip=127.0.0.1",
                    f"--ServerApp.port={port}",
                    "--ServerApp.port_retries=0",
                    f"--IdentityProvider.token={token}",
                    f"--ServerApp.root_dir={root}",
                    "--ServerApp.allow_root=True",  # CI runs as root
                    # window.jupyterapp: the test runs JupyterLab's own commands.
                    "--LabApp.expose_app_in_browser=True",
                    # The default ("pypi") queries PyPI for extensions: loopback only here.
                    "--LabApp.extension_manager=readonly",
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kernels included
            )
        server = Server(f"http://127.0.0.1:{port}", token, proc, log)
        if wait_started(server):
            break
        stop(server)
    else:
        pytest.fail(f"JupyterLab did not start:\n{server.output()}")
    try:
        yield server
    finally:
        stop(server)
        assert not group_alive(proc.pid), f"processes left behind:\n{server.output()}"


def wait_started(server: Server) -> bool:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return False
        try:
            if api(server, "/api/status") == 200:
                return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    return False


def stop(server: Server) -> None:
    """Shut the server down (it shuts its kernels down); kill its group if it lingers."""
    pgid = server.proc.pid
    if server.proc.poll() is None:
        try:
            api(server, "/api/shutdown", method="POST")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            server.proc.terminate()
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            server.proc.wait(timeout=5)
    # Kernels are in the group: give them a moment to follow the server out.
    deadline = time.monotonic() + 10
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)


# --- JupyterLab through its own application object ------------------------------------------

NOTEBOOK_READY = """() => {
  const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = widget && widget.sessionContext && widget.sessionContext.session
    && widget.sessionContext.session.kernel;
  return !!(kernel && kernel.connectionStatus === "connected" && kernel.status === "idle"
    && widget.content.widgets.length > 0);
}"""

RUN = """async ([command, marker]) => {
  const widget = window.jupyterapp.shell.currentWidget;
  const cells = widget.content.widgets;
  const index = cells.findIndex((c) => c.model.sharedModel.getSource().startsWith(marker));
  if (index < 0) throw new Error("no cell starts with " + marker);
  widget.content.activeCellIndex = index;
  await window.jupyterapp.commands.execute(command);
  return index;
}"""

CELLS_DONE = """([start, end]) => {
  const widget = window.jupyterapp.shell.currentWidget;
  const cells = widget.content.widgets.slice(start, end);
  const errors = cells.flatMap((c) => c.model.type === "code" ? c.model.outputs.toJSON() : [])
    .filter((o) => o.output_type === "error");
  if (errors.length) return "error: " + errors[0].ename + ": " + errors[0].evalue;
  const done = cells.every((c) => c.model.type !== "code" || c.model.executionCount !== null);
  const kernel = widget.sessionContext.session.kernel;
  return done && kernel.status === "idle" ? "done" : "";
}"""


def run_cells(page: Page, command: str, start: int, end: int | None) -> None:
    """Run JupyterLab ``command`` from the split cell; wait for cells [start, end) to finish."""
    page.evaluate(RUN, [command, SPLIT_AT])
    handle = page.wait_for_function(CELLS_DONE, arg=[start, end], timeout=CELLS_MS, polling=100)
    result = handle.json_value()
    assert result == "done", result


def packets(page: Page) -> list[int]:
    cells = page.locator('.webrtclab-readout td[data-metric="packets"]').all_inner_texts()
    return [int(text) for text in cells]


def test_notebook_02_panel_in_jupyterlab(jupyterlab: Server) -> None:
    url = f"{jupyterlab.url}/lab/tree/{NOTEBOOK.name}?reset&token={jupyterlab.token}"
    measured: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_function(NOTEBOOK_READY, timeout=CELLS_MS, polling=100)
            split = page.evaluate(
                "(marker) => window.jupyterapp.shell.currentWidget.content.widgets"
                ".findIndex((c) => c.model.sharedModel.getSource().startsWith(marker))",
                SPLIT_AT,
            )
            run_cells(page, "notebook:run-all-above", 0, split)

            # The plot cell (a bare Figure from webrtclab.plot, no pyplot) shows a picture
            # that the browser decoded, not "<Figure size ...>" text.
            plot = page.locator(".jp-OutputArea-output img[src^='data:image/png']").first
            plot.scroll_into_view_if_needed()
            plot.wait_for(state="visible", timeout=WAIT_MS)
            size = plot.evaluate("(img) => [img.complete, img.naturalWidth, img.naturalHeight]")
            assert size[0] and size[1] > 300 and size[2] > 150, size
            assert page.get_by_text("<Figure size").count() == 0

            # The panel rendered as widgets, with the anywidget parts drawn.
            panel = page.locator(".webrtclab-panel")
            panel.wait_for(state="visible", timeout=WAIT_MS)
            panel.scroll_into_view_if_needed()
            assert page.get_by_text("Loading widget").count() == 0
            page.locator(".webrtclab-chart svg polyline").first.wait_for(timeout=WAIT_MS)
            assert page.locator(".webrtclab-cursor-pad").count() == 1
            assert "connected" in page.locator(".webrtclab-status").inner_text()
            assert "host 127.0.0.1:" in page.locator(".webrtclab-connection").inner_text()
            previews = page.locator(".webrtclab-panel img[src^='blob:']")
            assert previews.count() == 2

            # The numbers move while the call runs (the kernel is idle: background tasks).
            first = packets(page)
            assert len(first) == 2 and all(n > 0 for n in first), first
            page.wait_for_function(
                """(first) => {
                  const cells = document.querySelectorAll(
                    '.webrtclab-readout td[data-metric="packets"]');
                  return [...cells].every((c, i) => parseInt(c.textContent) > first[i]);
                }""",
                arg=first,
                timeout=WAIT_MS,
            )
            second = packets(page)
            assert all(b > a for a, b in zip(first, second, strict=True)), (first, second)

            # A click is handled during the call: Send -> kernel -> data channel -> log.
            text = f"from the browser {secrets.token_hex(3)}"
            page.locator(".webrtclab-panel input[placeholder='a chat message']").fill(text)
            clicked = time.monotonic()
            page.locator(".webrtclab-panel button", has_text="Send").click()
            page.locator(".webrtclab-chat-log", has_text=f"alice → bob: {text}").wait_for(
                timeout=WAIT_MS
            )
            measured["click_to_chat_log_ms"] = round((time.monotonic() - clicked) * 1000, 1)

            # The pointer on the pad travels over the cursors channel and comes back drawn.
            pad = page.locator(".webrtclab-cursor-pad")
            box = pad.bounding_box()
            assert box is not None
            moved = time.monotonic()
            page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.3)
            page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.6, steps=5)
            page.locator(".webrtclab-cursor.remote[data-name='alice→bob']").wait_for(
                timeout=WAIT_MS
            )
            measured["pointer_to_remote_cursor_ms"] = round((time.monotonic() - moved) * 1000, 1)

            # A preset picked in the menu is applied by the kernel (its summary comes back).
            menu = panel.locator(".widget-dropdown select").nth(1)  # bob → alice
            menu.select_option("3g")
            panel.locator(".webrtclab-link-summary", has_text="150 ms ± 20").wait_for(
                timeout=WAIT_MS
            )

            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "jupyterlab-panel.png"), full_page=True)
            (ARTIFACTS / "jupyterlab-latency.json").write_text(json.dumps(measured, indent=2))

            run_cells(page, "notebook:run-all-below", split, None)
            assert page.locator(".webrtclab-panel").count() == 0  # closed with the lab
        finally:
            browser.close()
    # Generous: the whole path is browser -> server -> kernel -> peers and back.
    assert measured["click_to_chat_log_ms"] < 1000, measured
    assert measured["pointer_to_remote_cursor_ms"] < 1000, measured
