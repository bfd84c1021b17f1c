"""Show matplotlib figures as pictures in a Jupyter kernel, without pyplot.

The plot functions build a bare :class:`~matplotlib.figure.Figure` (no pyplot state).
IPython only knows how to turn a Figure into a PNG once its matplotlib integration is
active (``import matplotlib.pyplot`` or ``%matplotlib``); before that, a Figure as a
cell's value shows as ``<Figure size 700x400 with 1 Axes>``.  :func:`register` fills
that gap: it gives the kernel's PNG formatter a printer for ``Figure``.

Nothing here imports IPython: outside a running IPython shell (scripts, ``webrtclab
serve``, tests) :func:`register` does nothing.  Once IPython's own matplotlib
integration has chosen the figure formats (pyplot with the inline backend,
``%matplotlib ...``, ``InlineBackend.figure_formats``), it is left in charge: its
printer takes precedence, and ours declines, so a figure is never shown twice.
"""

from __future__ import annotations

import base64
import sys
from io import BytesIO
from typing import Any

__all__ = ["figure_png", "register"]

_FIGURE_MODULE, _FIGURE_NAME = "matplotlib.figure", "Figure"


def _ipython_formats_figures() -> bool:
    """True once IPython's matplotlib integration has selected the figure formats."""
    inline = sys.modules.get("matplotlib_inline.backend_inline")
    configure = getattr(inline, "configure_inline_support", None)
    return getattr(configure, "current_backend", "unset") != "unset"


def figure_png(fig: Any) -> str | None:
    """A figure as a base64 PNG, the way IPython's inline backend renders it.

    Returns None (no picture) for an empty figure, and when IPython's matplotlib
    integration handles figures itself.
    """
    if _ipython_formats_figures():
        return None
    if not fig.axes and not fig.lines:
        return None
    buffer = BytesIO()
    fig.savefig(
        buffer,
        format="png",
        dpi=fig.dpi,
        bbox_inches="tight",
        facecolor=fig.get_facecolor(),
        edgecolor=fig.get_edgecolor(),
    )
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def register() -> bool:
    """Give a running IPython shell a PNG printer for matplotlib figures.

    Returns True when a printer was added.  Does not import IPython (nor matplotlib):
    the printer is registered by name.
    """
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    display_formatter = getattr(shell, "display_formatter", None)
    formatters = getattr(display_formatter, "formatters", None)
    if not formatters or "image/png" not in formatters:
        return False
    png = formatters["image/png"]
    try:
        png.lookup_by_type(f"{_FIGURE_MODULE}.{_FIGURE_NAME}")
    except KeyError:
        pass
    else:
        return False  # someone (IPython's matplotlib integration, or we) already did
    png.for_type_by_name(_FIGURE_MODULE, _FIGURE_NAME, figure_png)
    return True
