"""The package works installed from its wheel: shipped traces and scenarios come along.

Slow (~30 s): it builds the wheel, installs it into a fresh virtual environment outside
the checkout, and runs two 3 s calls with the installed ``webrtclab`` command.  The new
environment borrows this one's dependencies through a ``.pth`` file (no download), but
not the checkout: a ``.pth`` line only adds a folder to ``sys.path``, so the editable
install's finder (itself started by a ``.pth`` file) is never run there.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from webrtclab._shipped import DATA_DIR

ROOT = Path(__file__).resolve().parents[1]

# Run by the installed interpreter: what the result folders and the name lookups give.
CHECK = """
import json, sys
import webrtclab
from webrtclab.experiment import load, load_scenario
from webrtclab.netem.traces import TRACES_DIR, load_trace

results = {path: load(path) for path in sys.argv[1:]}
print(json.dumps({
    "module": webrtclab.__file__,
    "traces_dir": str(TRACES_DIR),
    "scenarios": [load_scenario(n).name for n in ("demo", "3g-step", "turn-relay")],
    "trace_kbps": round(load_trace("3g-like").mean_rate_kbps, 1),
    "results": {
        path: {
            "status": r.status,
            "stats": len(r.stats),
            "kinds": sorted(set(r.stats["kind"])),
            "link": r.metadata["scenario"].get("link"),
        }
        for path, r in results.items()
    },
}))
"""

SCENARIO = """\
name = "installed"
duration_s = 3
seed = 1

[[peers]]
name = "alice"
width = 160
height = 120

[[peers]]
name = "bob"
width = 160
height = 120

[link]
trace = "3g-like"
delay_ms = 20
"""


def _build_wheel(tmp_path: Path) -> Path:
    # Built from a copy: an in-tree build leaves build/ and *.egg-info in the checkout,
    # and setuptools' build/lib keeps files since deleted from the source, which would
    # then ship in the wheel.
    src = tmp_path / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "webrtclab", src / "webrtclab", ignore=shutil.ignore_patterns("__pycache__")
    )
    # Offline with this environment's setuptools when it can build the project (77+, see
    # [build-system]); otherwise pip fetches one into an isolated build environment.
    major = int(importlib.metadata.version("setuptools").split(".")[0])
    isolation = ["--no-build-isolation"] if major >= 77 else []
    dist = tmp_path / "dist"
    _check(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(dist), str(src)]
    )
    (wheel,) = dist.glob("webrtclab-*.whl")
    return wheel


def _venv_with(wheel: Path, where: Path) -> Path:
    """A new virtual environment with ``wheel`` installed; its bin folder."""
    _check([sys.executable, "-m", "venv", "--without-pip", str(where)])
    python = where / "bin" / "python"
    _check(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps"]
        + ["--no-index", str(wheel)]
    )
    # The dependencies: this environment's site-packages, after the new one's (written
    # after the install, so that pip does not take this environment's webrtclab
    # metadata for the package being installed).
    purelib = _check([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    ours = dict.fromkeys(sysconfig.get_path(key) for key in ("purelib", "platlib"))
    (Path(purelib.strip()) / "webrtclab-deps.pth").write_text("\n".join(ours) + "\n")
    return where / "bin"


def _env(bin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    return env


def _run(
    argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _check(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = _run(argv, cwd, env)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


def test_the_checkouts_data_folders_are_the_package_data() -> None:
    # One copy of each file: data/traces and data/scenarios point into the package.
    for kind in ("traces", "scenarios"):
        link = ROOT / "data" / kind
        assert link.is_symlink() and not Path(os.readlink(link)).is_absolute(), link
        assert link.resolve() == (DATA_DIR / kind).resolve()


def test_the_installed_package_runs_the_demo_and_shipped_traces_by_name(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path / "build")
    bin_dir = _venv_with(wheel, tmp_path / "venv")
    work = tmp_path / "work"  # outside the checkout: nothing found relative to it
    work.mkdir()
    (work / "call.toml").write_text(SCENARIO)
    env = _env(bin_dir)
    webrtclab = str(bin_dir / "webrtclab")

    # The two calls run side by side; each is a short call on loopback.
    calls = [
        [webrtclab, "demo", "--out", "demo", "--duration", "3", "--no-progress"],
        [webrtclab, "run", "call.toml", "--out", "run", "--no-progress"],
    ]
    procs = [
        subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for argv in calls
    ]
    for argv, proc in zip(calls, procs, strict=True):
        _, stderr = proc.communicate(timeout=90)
        assert proc.returncode == 0, f"{argv[1:]} exited {proc.returncode}:\n{stderr.decode()}"

    # An unknown name is refused with the shipped names, and nothing is written.
    refused = _run([webrtclab, "run", "no-such-scenario", "--out", "nope"], work, env)
    assert refused.returncode == 2
    assert "usable by name: 3g-step, demo, turn-relay" in refused.stderr
    assert not (work / "nope").exists()

    found = json.loads(
        _check([str(bin_dir / "python"), "-c", CHECK, "demo", "run"], cwd=work, env=env)
    )
    venv = (tmp_path / "venv").resolve()
    assert Path(found["module"]).resolve().is_relative_to(venv), found["module"]
    assert Path(found["traces_dir"]).resolve().is_relative_to(venv)
    assert found["scenarios"] == ["demo", "3g-step", "turn-relay"]
    assert found["trace_kbps"] == 968.2
    for path, result in found["results"].items():
        assert result["status"] == "completed", (path, result)
        assert result["stats"] > 0 and result["kinds"] == ["audio", "video"], (path, result)
    assert found["results"]["run"]["link"]["trace"] == "3g-like"
