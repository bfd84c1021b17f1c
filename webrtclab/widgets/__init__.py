"""Jupyter widgets for a lab: :class:`LabPanel` and its parts.

``panel.py`` composes the panel; ``link_controls.py`` holds one link direction's
sliders and presets; ``live.py`` the rolling stats and frame previews; ``chart.py``
the live plot and ``cursor_pad.py`` the pointer pad, both anywidgets drawn by the
browser (ipywidgets has no pointer events; a PNG per second cost the kernel too much).
"""

from .chart import LiveChart
from .cursor_pad import CursorPad
from .link_controls import LinkControls
from .live import LiveStats, Readout
from .panel import CALL_STATES, LabPanel

__all__ = [
    "CALL_STATES",
    "CursorPad",
    "LabPanel",
    "LinkControls",
    "LiveChart",
    "LiveStats",
    "Readout",
]
