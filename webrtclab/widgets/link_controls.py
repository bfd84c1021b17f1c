"""Sliders and a preset menu for one direction of an emulated link."""

from __future__ import annotations

import contextlib
import html
import logging
from collections.abc import Callable, Iterator
from typing import Any

import ipywidgets as w

from ..exceptions import ConfigurationError
from ..netem.conditions import LinkConditions
from ..netem.presets import PRESETS

__all__ = ["DEFAULT_QUEUE_MS", "LinkControls", "describe"]

logger = logging.getLogger(__name__)

# A rate set from a slider on a link without a queue limit gets this drop-tail queue:
# an unbounded queue would let the delay grow without end once the sender overshoots.
DEFAULT_QUEUE_MS = 300.0
BASE = "lab default"
# Slider ranges: wide enough for every preset (satellite 300 ms, LTE 12 Mbit/s).
MAX_DELAY_MS = 1000.0
MAX_JITTER_MS = 200.0
MAX_LOSS_PERCENT = 50.0
MAX_RATE_KBPS = 20000


def describe(conditions: LinkConditions) -> str:
    """A short human summary of what a direction does to packets."""
    parts = [f"{conditions.delay_ms:g} ms"]
    if conditions.jitter_ms:
        parts[0] += f" ± {conditions.jitter_ms:g}"
    loss = conditions.expected_loss
    if loss:
        bursty = " bursty" if conditions.ge_p else ""
        parts.append(f"loss {loss * 100:.3g} %{bursty}")
    if conditions.rate_kbps is not None:
        parts.append(f"{conditions.rate_kbps:g} kbit/s")
    elif conditions.capacity_trace is not None:
        parts.append(f"trace {conditions.capacity_trace.mean_rate_kbps:.0f} kbit/s mean")
    if conditions.queue_limit_bytes is not None:
        parts.append(f"queue {conditions.queue_limit_bytes // 1000} kB")
    return ", ".join(parts)


class LinkControls:
    """Delay, jitter, loss and rate of one direction, applied live on every change.

    The preset menu picks the base conditions (every field: queue, bursty loss...);
    the sliders override delay, jitter, random loss and rate on top of it.  Each change
    calls ``apply`` with the resulting :class:`LinkConditions` (the panel passes
    ``lab.set_link``); a refused change leaves the sliders as they were.

    :param initial: the conditions in force now (the "lab default" entry).
    """

    def __init__(
        self,
        src: str,
        dst: str,
        initial: LinkConditions,
        apply: Callable[[LinkConditions], None],
        *,
        enabled: bool = True,
    ) -> None:
        self.src, self.dst = src, dst
        self._apply = apply
        self._default = initial
        self._base = initial
        self._quiet = False
        style = {"description_width": "70px"}
        layout = w.Layout(width="300px")
        names = [BASE, *PRESETS]
        self.preset = w.Dropdown(
            options=names, value=BASE, description="preset", style=style, layout=layout
        )
        slider: dict[str, Any] = {"continuous_update": False, "style": style, "layout": layout}
        self.delay = w.FloatSlider(
            min=0, max=MAX_DELAY_MS, step=1, description="delay ms", readout_format=".0f", **slider
        )
        self.jitter = w.FloatSlider(
            min=0,
            max=MAX_JITTER_MS,
            step=1,
            description="jitter ms",
            readout_format=".0f",
            **slider,
        )
        self.loss = w.FloatSlider(
            min=0,
            max=MAX_LOSS_PERCENT,
            step=0.1,
            description="loss %",
            readout_format=".1f",
            **slider,
        )
        self.rate = w.IntSlider(min=0, max=MAX_RATE_KBPS, step=50, description="kbit/s", **slider)
        self.rate.tooltip = "0 = unlimited"
        self.summary = w.HTML()
        self.summary.add_class("webrtclab-link-summary")
        title = w.HTML(f"<b>{src} → {dst}</b>")
        self.widget = w.VBox(
            [title, self.preset, self.delay, self.jitter, self.loss, self.rate, self.summary]
        )
        self._show(initial)
        self.preset.observe(self._on_preset, names="value")
        for control in (self.delay, self.jitter, self.loss, self.rate):
            control.observe(self._on_slider, names="value")
        if not enabled:
            for control in (self.preset, self.delay, self.jitter, self.loss, self.rate):
                control.disabled = True
            self.summary.value = (
                "<i>no network emulator: create the Lab with <code>link=</code></i>"
            )

    @property
    def conditions(self) -> LinkConditions:
        """The conditions the controls describe."""
        return self._compose(self.delay.value, self.jitter.value, self.loss.value, self.rate.value)

    def set(self, **changes: Any) -> LinkConditions:
        """Set fields (``preset``, ``delay_ms``, ``jitter_ms``, ``loss``, ``rate_kbps``) and apply.

        Values are validated before anything changes; ``rate_kbps=None`` means unlimited.
        """
        unknown = sorted(set(changes) - {"preset", "delay_ms", "jitter_ms", "loss", "rate_kbps"})
        if unknown:
            raise ConfigurationError(
                f"unknown link control {unknown[0]!r} "
                "(known: preset, delay_ms, jitter_ms, loss, rate_kbps)"
            )
        base = self._base
        name = changes.get("preset", self.preset.value)
        if "preset" in changes:
            if name not in self.preset.options:
                raise ConfigurationError(
                    f"unknown link preset {name!r} (valid: {', '.join(self.preset.options)})"
                )
            base = self._default if name == BASE else PRESETS[name]
        delay = changes.get("delay_ms", base.delay_ms if "preset" in changes else self.delay.value)
        jitter = changes.get(
            "jitter_ms", base.jitter_ms if "preset" in changes else self.jitter.value
        )
        loss = changes.get("loss", base.loss if "preset" in changes else self.loss.value / 100)
        rate = changes.get(
            "rate_kbps", base.rate_kbps if "preset" in changes else (self.rate.value or None)
        )
        self._check_range("delay_ms", delay, MAX_DELAY_MS)
        self._check_range("jitter_ms", jitter, MAX_JITTER_MS)
        self._check_range("loss", loss, MAX_LOSS_PERCENT / 100)
        if rate is not None:
            self._check_range("rate_kbps", rate, MAX_RATE_KBPS)
        self._base = base
        conditions = self._compose(delay, jitter, loss * 100, rate or 0, base=base)
        self._apply(conditions)
        with self._quietly():
            self.preset.value = name
            self._show(conditions)
        return conditions

    def _check_range(self, name: str, value: Any, high: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high:
            raise ConfigurationError(
                f"{self.src}→{self.dst}: {name}={value!r} is outside the controls' range "
                f"[0, {high:g}]"
            )

    def _compose(
        self,
        delay: float,
        jitter: float,
        loss_percent: float,
        rate: float,
        base: LinkConditions | None = None,
    ) -> LinkConditions:
        base = base or self._base
        rate_kbps = float(rate) if rate else None
        queue: dict[str, Any] = {}
        if (
            rate_kbps is not None
            and base.rate_kbps is None
            and base.queue_ms is None
            and base.queue_bytes is None
        ):
            queue["queue_ms"] = DEFAULT_QUEUE_MS
        changes: dict[str, Any] = {
            "delay_ms": float(delay),
            "jitter_ms": float(jitter),
            "loss": round(float(loss_percent) / 100, 6),
            **queue,
        }
        if base.capacity_trace is None or rate_kbps is not None:
            # A trace is the capacity until a rate is chosen on the slider.
            changes.update(rate_kbps=rate_kbps, trace=None)
        return base.replace(**changes)

    def _show(self, conditions: LinkConditions) -> None:
        with self._quietly():
            self.delay.value = conditions.delay_ms
            self.jitter.value = conditions.jitter_ms
            self.loss.value = conditions.loss * 100
            self.rate.value = int(conditions.rate_kbps or 0)
        self.summary.value = describe(conditions)

    @contextlib.contextmanager
    def _quietly(self) -> Iterator[None]:
        # Setting several sliders from a preset must apply once, not once per slider.
        quiet, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = quiet

    def _on_preset(self, change: dict[str, Any]) -> None:
        if not self._quiet:
            self._guard(lambda: self.set(preset=change["new"]), revert=("preset", change["old"]))

    def _on_slider(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        owner = change["owner"]
        self._guard(lambda: self._apply_sliders(), revert=(owner, change["old"]))

    def _apply_sliders(self) -> None:
        conditions = self.conditions
        self._apply(conditions)
        self.summary.value = describe(conditions)

    def _guard(self, action: Callable[[], object], revert: tuple[Any, Any]) -> None:
        """Run a change from the front end; on refusal put the control back and say why."""
        try:
            action()
        except Exception as exc:
            logger.info("%s→%s: link change refused: %s", self.src, self.dst, exc)
            control, old = revert
            if isinstance(control, str):
                control = getattr(self, control)
            with self._quietly():
                control.value = old
            self.summary.value = f"<span style='color:#c00'>refused: {html.escape(str(exc))}</span>"
