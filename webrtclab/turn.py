"""A real TURN relay for the lab: coturn on loopback, with REST-API credentials.

:class:`TurnServer` runs Debian's ``turnserver`` (coturn 4.6) as a child process on
127.0.0.1 with a shared secret (``use-auth-secret``), so the credentials of
:mod:`webrtclab.auth` work against it.  The secrets go into a private config file,
never on the command line (where ``ps`` would show them) and never into logs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import secrets as _secrets
import shutil
import signal
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

from aioice import stun

from ._tasks import CloseOnce, cancel_and_wait
from .auth import TurnConfig, TurnCredentials
from .exceptions import ConfigurationError, InvalidStateError, LabTimeoutError, WebrtcLabError

__all__ = ["TurnServer", "TurnServerError"]

logger = logging.getLogger(__name__)

EXECUTABLE = "turnserver"
_LOG_LINES = 200


class TurnServerError(WebrtcLabError, RuntimeError):
    """coturn could not be started, or died."""


class TurnServer:
    """coturn on 127.0.0.1, started and stopped by the lab.

    Example::

        async with TurnServer() as turn:
            creds = turn.credentials("alice")    # TURN REST API form
            config = turn.config                 # for SignalingServer(turn=...)

    :param secrets: shared secrets (the first signs credentials; coturn accepts
        all of them); one is generated when omitted.
    :param port: UDP/TCP listening port; 0 picks a free one.
    :param relay_ports: size of the relay port range (picked free at start).
    :param ttl_s: lifetime of the credentials :meth:`credentials` issues.
    """

    def __init__(
        self,
        *,
        secrets: Sequence[str] | None = None,
        port: int = 0,
        relay_ports: int = 64,
        realm: str = "webrtclab",
        ttl_s: int = 3600,
        executable: str = EXECUTABLE,
        start_timeout: float = 10.0,
    ) -> None:
        if secrets is None:
            secrets = (_secrets.token_urlsafe(32),)
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"port must be in 0-65535, got {port}")
        if not 2 <= relay_ports <= 10000:
            raise ConfigurationError(f"relay_ports must be in 2-10000, got {relay_ports}")
        if not realm or not realm.replace("-", "").replace(".", "").isalnum():
            raise ConfigurationError(f"realm must be a plain name, got {realm!r}")
        self.host = "127.0.0.1"
        self.port = port
        self.relay_ports = relay_ports
        self.realm = realm
        self.executable = executable
        self.start_timeout = start_timeout
        # Validates the secrets (length) and the ttl before anything starts.
        self._config = TurnConfig(secrets=tuple(secrets), uris=("turn:127.0.0.1:0",), ttl_s=ttl_s)
        self.relay_range: tuple[int, int] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._log: collections.deque[str] = collections.deque(maxlen=_LOG_LINES)
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._closed = False
        self._closing = CloseOnce()

    def __repr__(self) -> str:
        return f"TurnServer({self.host}:{self.port}, running={self.running})"

    # --- what clients need ---------------------------------------------------------------

    @property
    def uri(self) -> str:
        return f"turn:{self.host}:{self.port}?transport=udp"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def config(self) -> TurnConfig:
        """URIs and secrets for :class:`~webrtclab.signaling.SignalingServer` (``turn=``)."""
        if self._process is None:
            raise InvalidStateError("the TURN server is not started: its port is not known")
        return TurnConfig(secrets=self._config.secrets, uris=(self.uri,), ttl_s=self._config.ttl_s)

    def credentials(self, user_id: str, *, ttl_s: int | None = None) -> TurnCredentials:
        """Fresh TURN REST API credentials for ``user_id``."""
        return self.config.credentials(user_id, ttl_s=ttl_s)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def log_tail(self, lines: int = 20) -> list[str]:
        """The last lines coturn printed (secrets redacted)."""
        return list(self._log)[-lines:]

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start coturn and wait until it answers a STUN binding request."""
        if self._closed:
            raise InvalidStateError("cannot start a TURN server that was closed")
        if self._process is not None:
            return
        path = shutil.which(self.executable)
        if path is None:
            raise TurnServerError(
                f"{self.executable!r} not found: install the Debian package `coturn`"
            )
        port = self.port or _free_port()
        low, high = _free_range(self.relay_ports, avoid=port)
        self._dir = tempfile.TemporaryDirectory(prefix="webrtclab-turn-")
        conf = Path(self._dir.name) / "turnserver.conf"
        conf.write_text(self._conf_text(port, low, high, self._dir.name))
        conf.chmod(0o600)
        self._process = await asyncio.create_subprocess_exec(
            path,
            "-c",
            str(conf),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the notebook is ours to handle
        )
        self.port, self.relay_range = port, (low, high)
        self._reader = asyncio.create_task(self._read_log())
        try:
            await self._wait_ready()
        except BaseException:
            await self._stop()
            raise
        logger.info("TURN server (coturn) on %s, relay ports %d-%d", self.uri, low, high)

    def _conf_text(self, port: int, low: int, high: int, directory: str) -> str:
        lines = [
            "listening-ip=127.0.0.1",
            "relay-ip=127.0.0.1",
            f"listening-port={port}",
            f"min-port={low}",
            f"max-port={high}",
            f"realm={self.realm}",
            "use-auth-secret",
            *(f"static-auth-secret={s}" for s in self._config.secrets),
            "fingerprint",
            "no-tls",
            "no-dtls",
            # A loopback lab relays to 127.0.0.1, which coturn refuses by default
            # (403 Forbidden IP); the CLI must be off when this is allowed.
            "allow-loopback-peers",
            "no-cli",
            "no-multicast-peers",
            "log-file=stdout",
            "simple-log",
            f"pidfile={directory}/turn.pid",
            f"userdb={directory}/turndb",
        ]
        return "\n".join(lines) + "\n"

    async def _read_log(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        secrets = self._config.secrets
        async for raw in self._process.stdout:
            line = raw.decode(errors="replace").rstrip()
            for secret in secrets:
                line = line.replace(secret, "***")
            self._log.append(line)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("coturn: %s", line)

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        answered = loop.create_future()

        class Probe(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                with contextlib.suppress(ValueError):
                    response = stun.parse_message(data)
                    if response.transaction_id == request.transaction_id and not answered.done():
                        answered.set_result(None)

        transport, _ = await loop.create_datagram_endpoint(
            Probe, local_addr=("127.0.0.1", 0), remote_addr=self.address
        )
        try:
            while True:
                if not self.running:
                    raise TurnServerError(
                        "coturn exited while starting:\n" + "\n".join(self.log_tail())
                    )
                transport.sendto(bytes(request))
                try:
                    await asyncio.wait_for(asyncio.shield(answered), 0.05)
                    return
                except TimeoutError:
                    pass
                if loop.time() > deadline:
                    raise LabTimeoutError(
                        f"coturn did not answer on {self.uri} within {self.start_timeout} s:\n"
                        + "\n".join(self.log_tail())
                    )
        finally:
            transport.close()

    async def restart(self) -> None:
        """Stop coturn if it runs and start it again on the same port and secrets."""
        if self._closed:
            raise InvalidStateError("cannot restart a TURN server that was closed")
        await self._stop()
        await self.start()

    def kill(self) -> None:
        """SIGKILL coturn (to test what a crashed relay does to a call)."""
        if self.running:
            assert self._process is not None
            self._process.send_signal(signal.SIGKILL)

    async def close(self) -> None:
        """Stop coturn and remove its files; safe to call twice."""
        await self._closing.run(self._close)

    async def _close(self) -> None:
        self._closed = True
        await self._stop()

    async def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 3.0)
                except TimeoutError:
                    process.kill()
                    await process.wait()
            else:
                await process.wait()
        await cancel_and_wait(self._reader)
        self._reader = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    async def __aenter__(self) -> TurnServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            if _bindable(port, socket.SOCK_STREAM):
                return port
    raise TurnServerError("found no free port for the TURN server")


def _free_range(size: int, *, avoid: int) -> tuple[int, int]:
    """``size`` consecutive UDP ports, all free now, outside the ephemeral range."""
    rng = random.SystemRandom()
    for _ in range(100):
        low = rng.randrange(20000, 32000 - size)
        if low <= avoid < low + size:
            continue
        if all(_bindable(p, socket.SOCK_DGRAM) for p in range(low, low + size)):
            return low, low + size - 1
    raise TurnServerError(f"found no {size} consecutive free UDP ports for TURN relays")


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
