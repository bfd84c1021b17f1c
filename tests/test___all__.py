"""The public surface: ``__all__`` lists, re-exports, logging etiquette, typing marker."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import inspect
import logging
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

import webrtclab

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(m.name for m in pkgutil.walk_packages(webrtclab.__path__, "webrtclab."))

# Modules whose public classes make up the user-facing API (everything re-exported
# from the package); the wire-format schemas and the dispatcher's Member protocol
# stay in their modules.
USER_FACING = [
    "webrtclab.demo",
    "webrtclab.events",
    "webrtclab.exceptions",
    "webrtclab.lab",
    "webrtclab.media",
    "webrtclab.peer",
    "webrtclab.plot",
    "webrtclab.signaling",
    "webrtclab.signaling.client",
    "webrtclab.signaling.server",
    "webrtclab.stats",
]
EXPECTED_FUNCTIONS = {"plot_timeline", "run_demo"}


def isort_key(name: str) -> tuple[int, str]:
    """Ruff's RUF022 / isort order: CONSTANTS, then CamelCase, then everything else."""
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def module(name: str) -> ModuleType:
    return importlib.import_module(name)


def test_package_all_is_sorted() -> None:
    names = webrtclab.__all__
    assert len(names) == len(set(names))
    # Constants first, then classes, then functions, each alphabetical (ruff's RUF022);
    # note that this differs from plain sorted(): "STATS_COLUMNS" comes before "ConfigurationError".
    assert names == sorted(names, key=isort_key)
    assert names[0].isupper()  # constants first


def test_package_all_names_exist_and_are_public() -> None:
    for name in webrtclab.__all__:
        assert not name.startswith("_"), name
        assert hasattr(webrtclab, name), f"webrtclab.{name} is listed but missing"
    star: dict[str, object] = {}
    exec("from webrtclab import *", star)
    assert set(star) - {"__builtins__"} == set(webrtclab.__all__)


@pytest.mark.parametrize("name", [n for n in MODULES if not n.startswith("webrtclab._")])
def test_module_all_is_sorted_and_resolves(name: str) -> None:
    mod = module(name)
    names = getattr(mod, "__all__", None)
    assert names is not None, f"{name} has no __all__"
    assert len(names) == len(set(names))
    assert names in (sorted(names), sorted(names, key=isort_key)), f"{name}.__all__ is unsorted"
    for item in names:
        assert hasattr(mod, item), f"{name}.{item} is listed but missing"


@pytest.mark.parametrize("name", USER_FACING)
def test_public_classes_are_reexported(name: str) -> None:
    mod = module(name)
    for item in mod.__all__:
        obj = getattr(mod, item)
        if inspect.isclass(obj):
            assert item in webrtclab.__all__, f"{name}.{item} is not re-exported by webrtclab"
            assert getattr(webrtclab, item) is obj


def test_expected_functions_and_constants_are_reexported() -> None:
    assert EXPECTED_FUNCTIONS <= set(webrtclab.__all__)
    from webrtclab.demo import run_demo
    from webrtclab.plot import plot_timeline
    from webrtclab.stats import STATS_COLUMNS

    assert webrtclab.run_demo is run_demo
    assert webrtclab.plot_timeline is plot_timeline
    assert webrtclab.STATS_COLUMNS is STATS_COLUMNS


def test_reexports_are_defined_in_webrtclab() -> None:
    for name in webrtclab.__all__:
        obj = getattr(webrtclab, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__.startswith("webrtclab."), (name, obj.__module__)


def test_every_error_is_exported_and_derives_from_the_root() -> None:
    from webrtclab import exceptions

    errors = [
        obj
        for obj in vars(exceptions).values()
        if inspect.isclass(obj)
        and issubclass(obj, Exception)
        and obj.__module__ == exceptions.__name__
    ]
    assert {e.__name__ for e in errors} == set(exceptions.__all__)
    for error in errors:
        assert issubclass(error, webrtclab.WebrtcLabError)
        assert error.__name__ in webrtclab.__all__
    assert issubclass(webrtclab.ConfigurationError, ValueError)
    assert issubclass(webrtclab.ProtocolError, ValueError)
    assert issubclass(webrtclab.SignalingError, ConnectionError)
    assert issubclass(webrtclab.LabTimeoutError, TimeoutError)


def test_version_matches_the_metadata() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert webrtclab.__version__ == pyproject["project"]["version"]
    assert webrtclab.__version__ == importlib.metadata.version("webrtclab")


def test_package_logger_has_a_null_handler() -> None:
    logger = logging.getLogger("webrtclab")
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)
    # A library adds nothing else: output is the application's choice.
    assert all(isinstance(h, logging.NullHandler) for h in logger.handlers)
    assert logger.level == logging.NOTSET


def test_py_typed_is_shipped() -> None:
    marker = importlib.resources.files("webrtclab").joinpath("py.typed")
    assert marker.is_file()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["webrtclab"]


def test_import_has_no_side_effects() -> None:
    """Importing the package starts no pyplot state and configures no logging."""
    code = (
        "import logging, sys, webrtclab\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "assert not logging.getLogger().handlers, 'root logging configured'\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
