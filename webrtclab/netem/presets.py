"""Named link conditions for one direction of common access networks.

The numbers are typical values from public emulation profiles and standards, cited per
preset; values marked "ours" are illustrative choices, not measurements.  Rates are the
downlink's; use ``replace`` (or a scenario's ``b_to_a`` table) for an asymmetric link.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ..exceptions import ConfigurationError
from .conditions import LinkConditions

__all__ = ["PRESETS", "preset"]

PRESETS: Mapping[str, LinkConditions] = MappingProxyType(
    {
        # 1.6 Mbit/s and 300 ms RTT (150 ms each way): WebPageTest's "Mobile 3G" profile
        # (connectivity.ini.sample: 1.6 Mbps down / 768 kbps up, 300 ms RTT).  150 ms
        # one-way is also where ITU-T G.114 puts the limit for transparent interactivity.
        # 0.5 % loss: Loadero's "3G" profile.  Jitter and the deep buffer are ours.
        "3g": LinkConditions(
            delay_ms=150.0, jitter_ms=20.0, loss=0.005, rate_kbps=1600.0, queue_ms=300.0
        ),
        # 12 Mbit/s and 70 ms RTT (35 ms each way): WebPageTest's "LTE" profile.
        # 5 ms jitter and 0.2 % loss: Loadero's "4G" profile.  The buffer is ours.
        "lte": LinkConditions(
            delay_ms=35.0, jitter_ms=5.0, loss=0.002, rate_kbps=12000.0, queue_ms=200.0
        ),
        # Geostationary: RFC 2488 section 2 gives 239.6-279.0 ms propagation per
        # ground-satellite-ground hop, an RTT of at least 558 ms; 300 ms one-way (RTT
        # ~600 ms with processing) is the figure usually quoted.  1 Mbit/s: Loadero's
        # "Satellite phone" profile (1000/256 kbps).  Jitter and buffer are ours.
        "satellite": LinkConditions(
            delay_ms=300.0, jitter_ms=10.0, rate_kbps=1000.0, queue_ms=600.0
        ),
        # Bursty loss as on a congested or fading 802.11 link, in the Gilbert-Elliott
        # model commonly used for it (netem's "loss gemodel").  Every value is ours:
        # bad spells of 4 packets on average (1/r), 3.8 % of the time, losing half the
        # packets in them, which is ~1.9 % average loss; a few ms of delay and jitter.
        "lossy-wifi": LinkConditions(
            delay_ms=5.0, jitter_ms=5.0, ge_p=0.01, ge_r=0.25, ge_loss_good=0.0, ge_loss_bad=0.5
        ),
        # No impairment: the link passes packets through untouched.
        "none": LinkConditions(),
    }
)
"""Preset name -> conditions of one direction."""


def preset(name: str) -> LinkConditions:
    """The conditions named ``name`` (see :data:`PRESETS`)."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ConfigurationError(
            f"unknown link preset {name!r} (valid: {', '.join(sorted(PRESETS))})"
        ) from None
