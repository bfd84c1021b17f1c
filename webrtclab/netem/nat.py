"""NAT behaviour, as RFC 4787 describes it: the pure model a NAT box drives.

No sockets here.  A :class:`NatTable` decides, for each packet an internal endpoint
sends to a remote endpoint, which mapping (public port) it leaves through, creating
one when needed; and for each packet that arrives at a public port, whether the NAT
lets it in and to which internal endpoint.  Its clock and its port allocator are
injected, so the model is deterministic under test; the lab's
:class:`~webrtclab.netem.natbox.NatBox` gives it real UDP sockets.

The behaviours (RFC 4787, "NAT Behavioral Requirements for Unicast UDP"):

- **Mapping** (section 4.1): *endpoint-independent* (one mapping per internal
  endpoint, whatever the destination), *address-dependent* (one per internal endpoint
  and destination address) or *address-and-port-dependent* (one per internal
  endpoint and destination endpoint: a "symmetric" NAT).
- **Filtering** (section 5): which remote endpoints may send in through a mapping:
  any (*endpoint-independent*), those whose address the mapping has sent to
  (*address-dependent*), or those whose address and port it has sent to
  (*address-and-port-dependent*).  The permissions are kept per mapping, which for
  endpoint-independent mapping is per internal endpoint, as in the RFC.
- **Lifetime** (section 4.3): a mapping, and each permission, lives ``lifetime_s``
  after the last outbound packet that used it (REQ-6: outbound refreshes; inbound
  refresh is optional, off by default).  An expired mapping drops what arrives and
  is replaced by a new one (a new public port) at the next outbound packet.
- **Hairpinning** (section 6): a packet from inside to the NAT's own public address
  is looped back to the mapping it names, with the sender's mapped address as its
  source (REQ-9), or dropped when hairpinning is off.

The presets name the classic "cone" taxonomy (RFC 3489 section 5, which RFC 4787
section 3 maps onto these behaviours): ``full-cone`` (EIM + EIF),
``restricted-cone`` (EIM + ADF), ``port-restricted-cone`` (EIM + APDF) and
``symmetric`` (APDM + APDF).  Pion's ``vnet`` (github.com/pion/transport, ``vnet/nat.go``)
models NATs for its ICE tests the same way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from ..exceptions import ConfigurationError
from ..tables import NatBindingRow

__all__ = [
    "ADDRESS_AND_PORT_DEPENDENT",
    "ADDRESS_DEPENDENT",
    "BEHAVIOURS",
    "ENDPOINT_INDEPENDENT",
    "NAT_PRESETS",
    "Address",
    "Inbound",
    "NatConfig",
    "NatMapping",
    "NatTable",
    "Outbound",
    "format_address",
    "nat_config",
    "require_loopback",
]

Address = tuple[str, int]
Behaviour = Literal["endpoint-independent", "address-dependent", "address-and-port-dependent"]

ENDPOINT_INDEPENDENT: Behaviour = "endpoint-independent"
ADDRESS_DEPENDENT: Behaviour = "address-dependent"
ADDRESS_AND_PORT_DEPENDENT: Behaviour = "address-and-port-dependent"
BEHAVIOURS: tuple[Behaviour, ...] = (
    ENDPOINT_INDEPENDENT,
    ADDRESS_DEPENDENT,
    ADDRESS_AND_PORT_DEPENDENT,
)
_SHORT: dict[str, Behaviour] = {
    "eim": ENDPOINT_INDEPENDENT,
    "eif": ENDPOINT_INDEPENDENT,
    "adm": ADDRESS_DEPENDENT,
    "adf": ADDRESS_DEPENDENT,
    "apdm": ADDRESS_AND_PORT_DEPENDENT,
    "apdf": ADDRESS_AND_PORT_DEPENDENT,
}

#: RFC 4787 REQ-5: a mapping must not expire in less than 2 minutes.
DEFAULT_LIFETIME_S = 120.0


def format_address(address: Address | None) -> str:
    return "" if address is None else f"{address[0]}:{address[1]}"


def require_loopback(host: str, what: str) -> str:
    """``host`` if it is an IPv4 address inside 127.0.0.0/8, else ConfigurationError."""
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        raise ConfigurationError(f"{what} must be an IPv4 address, got {host!r}") from None
    if address not in ipaddress.IPv4Network("127.0.0.0/8"):
        raise ConfigurationError(f"{what} must be inside 127.0.0.0/8 (loopback), got {host!r}")
    return str(address)


def _behaviour(value: object, what: str) -> Behaviour:
    if isinstance(value, str):
        name = value.strip().lower().replace("_", "-").replace(" ", "-")
        name = _SHORT.get(name, name)
        if name in BEHAVIOURS:
            return name
    raise ConfigurationError(
        f"NAT {what} must be one of {', '.join(BEHAVIOURS)} (or EIM/ADM/APDM, EIF/ADF/APDF), "
        f"got {value!r}"
    )


@dataclass(frozen=True)
class NatConfig:
    """How one NAT behaves (RFC 4787); see the module's docstring.

    :param mapping: ``"endpoint-independent"``, ``"address-dependent"`` or
        ``"address-and-port-dependent"`` (or EIM, ADM, APDM).
    :param filtering: the same three (or EIF, ADF, APDF).
    :param lifetime_s: how long a mapping (and a filtering permission) lives after the
        last outbound packet that used it.
    :param hairpinning: loop packets sent to the NAT's own public address back in.
    :param inbound_refresh: inbound packets refresh the mapping too (RFC 4787 REQ-6
        leaves it optional).
    """

    mapping: Behaviour = ENDPOINT_INDEPENDENT
    filtering: Behaviour = ADDRESS_AND_PORT_DEPENDENT
    lifetime_s: float = DEFAULT_LIFETIME_S
    hairpinning: bool = True
    inbound_refresh: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "mapping", _behaviour(self.mapping, "mapping"))
        object.__setattr__(self, "filtering", _behaviour(self.filtering, "filtering"))
        lifetime = self.lifetime_s
        if (
            isinstance(lifetime, bool)
            or not isinstance(lifetime, int | float)
            or not 0 < lifetime < float("inf")
        ):
            raise ConfigurationError(
                f"NAT lifetime_s must be a positive number of seconds, got {lifetime!r}"
            )
        object.__setattr__(self, "lifetime_s", float(lifetime))
        for name in ("hairpinning", "inbound_refresh"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(
                    f"NAT {name} must be true or false, got {getattr(self, name)!r}"
                )

    @property
    def name(self) -> str:
        """The preset's name when it is one (lifetime and hairpinning aside), else a summary."""
        for name, preset in NAT_PRESETS.items():
            if (preset.mapping, preset.filtering) == (self.mapping, self.filtering):
                return name
        return f"{self.mapping} mapping, {self.filtering} filtering"


NAT_PRESETS: Mapping[str, NatConfig] = MappingProxyType(
    {
        "full-cone": NatConfig(ENDPOINT_INDEPENDENT, ENDPOINT_INDEPENDENT),
        "restricted-cone": NatConfig(ENDPOINT_INDEPENDENT, ADDRESS_DEPENDENT),
        "port-restricted-cone": NatConfig(ENDPOINT_INDEPENDENT, ADDRESS_AND_PORT_DEPENDENT),
        "symmetric": NatConfig(ADDRESS_AND_PORT_DEPENDENT, ADDRESS_AND_PORT_DEPENDENT),
    }
)


def nat_config(value: object) -> NatConfig:
    """A :class:`NatConfig` from a preset name, a config, or a mapping (a scenario's table).

    A mapping may name a ``preset`` and override its fields:
    ``{"preset": "symmetric", "lifetime_s": 30}``.
    """
    if isinstance(value, NatConfig):
        return value
    if isinstance(value, str):
        name = value.strip().lower().replace("_", "-").replace(" ", "-")
        if name in NAT_PRESETS:
            return NAT_PRESETS[name]
        raise ConfigurationError(
            f"unknown NAT preset {value!r}: choose one of {', '.join(NAT_PRESETS)}"
        )
    if isinstance(value, Mapping):
        settings = dict(value)
        base = nat_config(settings.pop("preset")) if "preset" in settings else NatConfig()
        known = {f.name for f in fields(NatConfig)}
        unknown = sorted(str(k) for k in settings if k not in known)
        if unknown:
            raise ConfigurationError(
                f"unknown NAT setting(s) {', '.join(unknown)}: "
                f"use preset, {', '.join(sorted(known))}"
            )
        merged = {f.name: getattr(base, f.name) for f in fields(NatConfig)}
        return NatConfig(**{**merged, **settings})
    raise ConfigurationError(
        f"a NAT must be a preset name ({', '.join(NAT_PRESETS)}), a NatConfig or a NatBox, "
        f"got {value!r}"
    )


@dataclass
class NatMapping:
    """One binding of an internal endpoint to a public port."""

    internal: Address
    external: Address
    #: what the mapping behaviour keys it on besides the internal endpoint
    #: (nothing, the destination address, or the destination endpoint)
    key: tuple[Any, ...]
    created_s: float
    last_out_s: float
    #: filtering permissions: remote address or endpoint -> last outbound time
    permissions: dict[Any, float] = field(default_factory=dict)
    packets_out: int = 0
    packets_in: int = 0
    filtered: int = 0
    expired: bool = False


class Outbound(NamedTuple):
    """What the NAT does with an outbound packet: the mapping it leaves through, or why not."""

    mapping: NatMapping | None
    created: bool = False
    dropped: str | None = None
    #: the packet is for one of the NAT's own mappings (hairpinning)
    hairpin: bool = False


class Inbound(NamedTuple):
    """What the NAT does with an inbound packet: the internal endpoint it goes to, or why not."""

    internal: Address | None
    dropped: str | None = None


class NatTable:
    """The bindings of one NAT and its decisions (see the module's docstring).

    :param config: the behaviours.
    :param public_ip: the NAT's public address.
    :param allocate_port: gives a fresh public port for each new mapping (the box binds
        a socket; tests count).
    :param release_port: called with the public port of a mapping that expired or was
        released.
    :param clock: seconds, any time base (the lab's clock).
    :param on_row: receives a :class:`~webrtclab.tables.NatBindingRow` for each
        mapping created, expired or released and each packet filtered.
    """

    def __init__(
        self,
        config: NatConfig,
        public_ip: str,
        *,
        allocate_port: Callable[[], int],
        clock: Callable[[], float],
        release_port: Callable[[int], None] | None = None,
        name: str = "nat",
        on_row: Callable[[NatBindingRow], None] | None = None,
    ) -> None:
        self.config = config
        self.public_ip = public_ip
        self.name = name
        self._allocate = allocate_port
        self._release = release_port
        self._clock = clock
        self._on_row = on_row
        self._by_key: dict[tuple[Any, ...], NatMapping] = {}
        self._by_port: dict[int, NatMapping] = {}
        self.created = 0
        self.filtered = 0

    def __repr__(self) -> str:
        return f"NatTable({self.name!r}, {self.config.name}, {len(self._by_port)} mappings)"

    @property
    def mappings(self) -> list[NatMapping]:
        """The live mappings (expired ones are removed when the table next looks)."""
        return list(self._by_port.values())

    # --- decisions -----------------------------------------------------------------------

    def _key(self, internal: Address, remote: Address) -> tuple[Any, ...]:
        behaviour = self.config.mapping
        if behaviour == ENDPOINT_INDEPENDENT:
            return (internal,)
        if behaviour == ADDRESS_DEPENDENT:
            return (internal, remote[0])
        return (internal, remote)

    def _permission(self, remote: Address) -> Any:
        behaviour = self.config.filtering
        if behaviour == ADDRESS_DEPENDENT:
            return remote[0]
        if behaviour == ADDRESS_AND_PORT_DEPENDENT:
            return remote
        return None

    def _alive(self, mapping: NatMapping, now: float) -> bool:
        return now - mapping.last_out_s <= self.config.lifetime_s

    def outbound(self, internal: Address, remote: Address) -> Outbound:
        """An internal endpoint sends to ``remote``: the mapping it leaves through."""
        now = self._clock()
        self.expire(now)
        hairpin = remote[0] == self.public_ip
        if hairpin and not self.config.hairpinning:
            self.filtered += 1
            self._row(now, "filtered", internal, None, remote, "hairpinning off")
            return Outbound(None, dropped="hairpinning off", hairpin=True)
        key = self._key(internal, remote)
        mapping = self._by_key.get(key)
        created = mapping is None
        if mapping is None:
            port = self._allocate()
            mapping = NatMapping(
                internal=internal,
                external=(self.public_ip, port),
                key=key,
                created_s=now,
                last_out_s=now,
            )
            self._by_key[key] = mapping
            self._by_port[port] = mapping
            self.created += 1
            self._row(now, "mapping-created", internal, mapping.external, remote, "")
        mapping.last_out_s = now
        mapping.packets_out += 1
        permission = self._permission(remote)
        if permission is not None:
            mapping.permissions[permission] = now
        return Outbound(mapping, created=created, hairpin=hairpin)

    def inbound(self, port: int, remote: Address) -> Inbound:
        """A packet from ``remote`` arrives at public ``port``: where it goes, or why not."""
        now = self._clock()
        mapping = self._by_port.get(port)
        if mapping is None:
            self.filtered += 1
            self._row(now, "filtered", None, (self.public_ip, port), remote, "no mapping")
            return Inbound(None, "no mapping")
        if not self._alive(mapping, now):
            self._expire_one(mapping, now)
            self.filtered += 1
            mapping.filtered += 1
            self._row(now, "filtered", mapping.internal, mapping.external, remote, "expired")
            return Inbound(None, "expired")
        permission = self._permission(remote)
        if permission is not None:
            since = mapping.permissions.get(permission)
            if since is None or now - since > self.config.lifetime_s:
                self.filtered += 1
                mapping.filtered += 1
                reason = f"{self.config.filtering} filtering"
                self._row(now, "filtered", mapping.internal, mapping.external, remote, reason)
                return Inbound(None, reason)
        mapping.packets_in += 1
        if self.config.inbound_refresh:
            mapping.last_out_s = now
        return Inbound(mapping.internal)

    def public_address(self, internal: Address, remote: Address) -> Address | None:
        """The public address packets from ``internal`` to ``remote`` leave with now
        (None if no live mapping); creates nothing."""
        mapping = self._by_key.get(self._key(internal, remote))
        if mapping is None or not self._alive(mapping, self._clock()):
            return None
        return mapping.external

    def refuse(self, internal: Address, remote: Address, reason: str) -> None:
        """Count and log an outbound packet the box drops before translating it."""
        self.filtered += 1
        self._row(self._clock(), "filtered", internal, None, remote, reason)

    # --- housekeeping ----------------------------------------------------------------------

    def expire(self, now: float | None = None) -> list[NatMapping]:
        """Remove the mappings whose lifetime ended; returns them."""
        now = self._clock() if now is None else now
        gone = [m for m in self._by_port.values() if not self._alive(m, now)]
        for mapping in gone:
            self._expire_one(mapping, now)
        return gone

    def _expire_one(self, mapping: NatMapping, now: float) -> None:
        self._remove(mapping)
        mapping.expired = True
        self._row(
            now,
            "mapping-expired",
            mapping.internal,
            mapping.external,
            None,
            f"idle {now - mapping.last_out_s:.1f} s",
        )

    def release(self, internal: Address) -> list[NatMapping]:
        """Remove every mapping of ``internal`` (its socket closed); returns them."""
        now = self._clock()
        gone = [m for m in self._by_port.values() if m.internal == internal]
        for mapping in gone:
            self._remove(mapping)
            self._row(now, "mapping-released", internal, mapping.external, None, "")
        return gone

    def clear(self) -> list[NatMapping]:
        """Remove every mapping (the NAT closes); returns them."""
        gone = list(self._by_port.values())
        for mapping in gone:
            self._remove(mapping)
        return gone

    def _remove(self, mapping: NatMapping) -> None:
        self._by_key.pop(mapping.key, None)
        port = mapping.external[1]
        if self._by_port.get(port) is mapping:
            del self._by_port[port]
            if self._release is not None:
                self._release(port)

    def _row(
        self,
        now: float,
        event: str,
        internal: Address | None,
        external: Address | None,
        remote: Address | None,
        detail: str,
    ) -> None:
        if self._on_row is not None:
            self._on_row(
                NatBindingRow(
                    now,
                    self.name,
                    event,
                    format_address(internal),
                    format_address(external),
                    format_address(remote),
                    detail,
                )
            )
