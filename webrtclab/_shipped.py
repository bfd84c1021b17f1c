"""Files shipped inside the package (``webrtclab/data/``), found by name.

The checkout's top-level ``data/traces`` and ``data/scenarios`` are symlinks to these
folders, so a source checkout and an installed wheel read the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

from .exceptions import ConfigurationError

__all__ = ["DATA_DIR", "resolve_shipped", "shipped_names"]

# The package path rather than importlib.resources: callers want real paths (the traces
# module's regenerator writes here; error messages print them), and the lab needs an
# unpacked install anyway (its extension modules cannot be imported from a zip).
DATA_DIR = Path(__file__).resolve().parent / "data"
"""The package's data folder: ``traces/`` (Mahimahi traces), ``scenarios/`` (TOML)."""


def shipped_names(folder: Path, suffix: str) -> list[str]:
    """Names (file stems) of the ``*suffix`` files in ``folder``, sorted."""
    return sorted(p.stem for p in folder.glob(f"*{suffix}") if p.is_file())


def resolve_shipped(path: str | os.PathLike[str], folder: Path, suffix: str, what: str) -> Path:
    """``path`` if it is a file, else the shipped ``folder/<path><suffix>`` for a bare name.

    An existing file wins over a shipped name; a bare name (no directory part) that is
    not a file here, e.g. ``"demo"`` next to a result folder called ``demo``, means the
    shipped file.  Anything else that exists (a directory) is returned for the caller's
    reader to refuse.

    :param what: the kind of file, for the error, e.g. ``"trace"``.
    :raises ConfigurationError: nothing by that path or name, listing the shipped names.
    """
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    if candidate.parent == Path(".") and candidate.name not in ("", ".", ".."):
        shipped = folder / f"{candidate.name}{suffix}"
        if shipped.is_file():
            return shipped
    if candidate.exists():
        return candidate
    names = ", ".join(shipped_names(folder, suffix))
    raise ConfigurationError(
        f"{what} file {str(path)!r} does not exist (shipped {what}s, usable by name: {names})"
    )
