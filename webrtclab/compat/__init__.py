"""The one place where webrtclab reaches into other libraries' private internals.

Each module here names the versions it was checked against and refuses others with a
clear :class:`CompatibilityError` at import, instead of failing later in a way no error
message explains.  Nothing outside this package uses a private name of aiortc,
aioice or aiohttp (``tests/test_architecture.py`` checks the source): ``aiortc``
patches the media path, ``aioice`` ICE gathering and checks, ``aiohttp`` the
signaling server's WebSocket reader.
"""

from __future__ import annotations

from ..exceptions import WebrtcLabError

__all__ = ["CompatibilityError", "check_version"]


class CompatibilityError(WebrtcLabError, RuntimeError):
    """An installed library has a version whose internals webrtclab was not checked on."""


def check_version(library: str, found: str, checked: tuple[str, ...]) -> None:
    """Raise :class:`CompatibilityError` unless ``found`` starts with a ``checked`` prefix."""
    if not any(found == v or found.startswith(v + ".") for v in checked):
        raise CompatibilityError(
            f"{library} {found} is installed, but webrtclab's patches of its internals "
            f"were checked on {library} {', '.join(checked)} only: install one of those "
            f"(pyproject.toml pins it) or update webrtclab.compat"
        )
