"""The package's joints, read from its source: the compat seam, import cycles, the lean server.

- Nothing outside ``webrtclab/compat/`` uses a private name of aiortc, aioice or aiohttp.
- The module import graph (module-level imports, TYPE_CHECKING blocks left out) has
  no cycle.
- What ``webrtclab serve`` and ``webrtclab --help`` import leaves pandas, matplotlib,
  aiortc and the widgets out.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "webrtclab"
COMPAT = PACKAGE / "compat"
LIBRARIES = ("aiortc", "aioice", "aiohttp")

# aiortc's name-mangled attributes (``RTCRtpSender.__lsr`` is ``_RTCRtpSender__lsr``).
MANGLED = re.compile(r"_RTC\w*__\w+")
PRIVATE = re.compile(r"_[a-z]\w*")


def _sources(root: Path) -> Iterator[Path]:
    yield from sorted(root.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _defined_private_names(paths: Iterator[Path]) -> set[str]:
    """Private names a body of code defines: ``self._x =``, ``def _x``, ``_x =``, slots."""
    names: set[str] = set()
    for path in paths:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)  # __slots__ entries, setattr targets
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return {n for n in names if PRIVATE.fullmatch(n)}


@cache
def library_private_names() -> frozenset[str]:
    """Private names the three libraries define and the lab itself does not."""
    found: set[str] = set()
    for library in LIBRARIES:
        spec = importlib.util.find_spec(library)
        assert spec is not None and spec.origin is not None
        found |= _defined_private_names(_sources(Path(spec.origin).parent))
    own = (p for p in _sources(PACKAGE) if COMPAT not in p.parents)
    return frozenset(found - _defined_private_names(own))


def private_uses(source: str, private_names: frozenset[str]) -> list[str]:
    """Where ``source`` uses a private name of aiortc, aioice or aiohttp, as ``line: text``.

    Flags: importing a private name or module of theirs; any attribute of a name
    imported from them that is private or assigned to (a monkeypatch); a mangled
    ``_RTC...__`` name; a private name only they define, read as an attribute or
    passed as a string (``getattr(x, "_codecs")``).
    """
    tree = ast.parse(source)
    imported: set[str] = set()
    found: list[str] = []

    def flag(node: ast.AST, what: str) -> None:
        found.append(f"{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in LIBRARIES:
                    imported.add((alias.asname or alias.name).split(".")[0])
                    if any(p.startswith("_") for p in alias.name.split(".")):
                        flag(node, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in LIBRARIES:
                if any(p.startswith("_") for p in node.module.split(".")):
                    flag(node, f"from {node.module} import ...")
                for alias in node.names:
                    imported.add(alias.asname or alias.name)
                    if alias.name.startswith("_"):
                        flag(node, f"from {node.module} import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            on_library = isinstance(base, ast.Name) and base.id in imported
            if MANGLED.fullmatch(node.attr):
                flag(node, f".{node.attr}")
            elif on_library and node.attr.startswith("_") and not node.attr.startswith("__"):
                flag(node, f"{ast.unparse(node)}")
            elif on_library and isinstance(node.ctx, ast.Store | ast.Del):
                flag(node, f"{ast.unparse(node)} = ...")
            elif node.attr in private_names:
                flag(node, f"{ast.unparse(node)}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if MANGLED.search(text) or text in private_names:
                flag(node, repr(text))
    return found


def test_no_private_name_of_another_library_outside_compat() -> None:
    names = library_private_names()
    found = {
        str(path.relative_to(PACKAGE.parent)): uses
        for path in _sources(PACKAGE)
        if COMPAT not in path.parents
        and (uses := private_uses(path.read_text(encoding="utf-8"), names))
    }
    assert found == {}, "move these into webrtclab/compat/"


@pytest.mark.parametrize(
    "source",
    [
        "import aiortc\nx = aiortc.rtcrtpsender._foo",
        "from aiohttp import web_ws\nweb_ws.WebSocketDataQueue = object",
        "import aioice.ice\naioice.ice.get_host_addresses = len",
        "from aiohttp._websocket.reader import WebSocketDataQueue",
        "from aiortc.rtp import _private_thing",
        "x = getattr(sender, '_RTCRtpSender__lsr_time')",
        "x = sender._RTCRtpReceiver__jitter_buffer",
        "x = getattr(transceiver, '_codecs', None)",
        "x = transport._connection._nominated",
        "x = connection._check_list",
    ],
)
def test_the_check_sees_each_kind_of_private_use(source: str) -> None:
    assert private_uses(source, library_private_names())


@pytest.mark.parametrize(
    "source",
    [
        "x = self._closed",  # the lab's own private names are its business
        "peer._changed.set()",
        "from aiortc import RTCPeerConnection\npc = RTCPeerConnection()\npc.close()",
        "x = type(m).__struct_config__",
    ],
)
def test_the_check_leaves_the_labs_own_names_alone(source: str) -> None:
    assert private_uses(source, library_private_names()) == []


# --- import cycles ------------------------------------------------------------------------


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported (not in functions or TYPE_CHECKING)."""
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                pending.extend(node.body)
            pending.extend(node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                pending.extend(handler.body)
        elif isinstance(node, ast.With):
            pending.extend(node.body)


def import_graph() -> dict[str, set[str]]:
    """Each webrtclab module and the webrtclab modules it imports at import time.

    ``from . import x`` counts as importing ``x`` where ``x`` is a module, else the
    package; importing ``a.b.c`` also runs ``a`` and ``a.b``, which are edges too,
    except the module's own packages (always imported before it).
    """
    modules = {_module_name(p): p for p in _sources(PACKAGE)}
    graph: dict[str, set[str]] = {name: set() for name in modules}

    def add(src: str, target: str) -> None:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in modules and prefix != src and not src.startswith(prefix + "."):
                graph[src].add(prefix)

    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _module_level_imports(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(name, alias.name)
                continue
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            add(name, target)
            for alias in node.names:
                add(name, f"{target}.{alias.name}")
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "webrtclab.signaling.rooms" in graph["webrtclab.netem.relay"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_check_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# --- layers (the README's architecture map) --------------------------------------------------

# A module imports only from its own layer or the layers below (the README states the rule).
LAYERS: dict[str, int] = {
    # 0, core: data, protocols and algorithms; no sockets, no tasks of their own
    **dict.fromkeys(
        (
            "webrtclab",
            "exceptions",
            "events",
            "_tasks",
            "_gcpause",
            "_display",
            "_lazy",
            "_shipped",
            "auth",
            "sdp",
            "media",
            "viewer",
            "member",
            "negotiation",
            "tables",
            "cc",
            "codecs",
            "bwe",
            "exercises",
            "netem",
            "netem.conditions",
            "netem.link",
            "netem.presets",
            "netem.traces",
            "netem.nat",
            "signaling",  # its __init__ loads server and client lazily
            "signaling.messages",
            "signaling.rooms",
            "experiment.scenario",
            "experiment.summary",
            "web",
        ),
        0,
    ),
    # 1, other libraries' internals
    "compat": 1,
    # 2, components that do I/O
    **dict.fromkeys(
        (
            "signaling.server",
            "signaling.client",
            "turn",
            "netem.relay",
            "netem.natbox",
            "netem.gateway",
            "stun",
            "loopback",
            "recording",
            "session",
            "peer",
            "browser",
            "stats",
            "quality",
        ),
        2,
    ),
    # 3, the composition root
    "lab": 3,
    # 4, front-ends
    **dict.fromkeys(
        (
            "experiment",
            "experiment.results",
            "experiment.runner",
            "experiment.sweep",
            "fielddata",
            "widgets",
            "plot",
            "demo",
            "cli",
            "__main__",
            "gym",
        ),
        4,
    ),
}


def layer_of(module: str) -> int:
    """The layer of a module: its own entry, else its closest package's."""
    name = module.removeprefix("webrtclab.") if module != "webrtclab" else module
    while name not in LAYERS:
        if "." not in name:
            raise AssertionError(f"{module} has no layer: add it to LAYERS (and the README map)")
        name = name.rsplit(".", 1)[0]
    return LAYERS[name]


def test_modules_import_only_their_layer_or_below() -> None:
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in import_graph().items()
        for target in targets
        if layer_of(target) > layer_of(module)
        # a package's __init__ re-exports its modules (lazily for webrtclab itself)
        and not target.startswith(module + ".")
    ]
    assert not upward, upward


# --- the lean server ------------------------------------------------------------------------

HEAVY = ("pandas", "matplotlib", "aiortc", "av", "ipywidgets", "numpy")


def _imported_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(done.stdout.split())


@pytest.mark.parametrize(
    "statement",
    [
        "import webrtclab",
        "import webrtclab.cli",
        "from webrtclab.cli import _parser; _parser()",
        "import webrtclab.signaling.server",
        "import webrtclab.turn, webrtclab.auth",
    ],
)
def test_what_serve_and_help_import_leaves_the_lab_out(statement: str) -> None:
    modules = _imported_after(statement)
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, f"{statement!r} imported {heavy[:10]}"
