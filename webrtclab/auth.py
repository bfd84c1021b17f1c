"""Who may use the lab: signed join tokens and time-limited TURN credentials.

Join tokens are HS256 JSON Web Tokens (PyJWT) that bind a user id, optionally a
room, and an expiry.  A server configured with a join secret only lets a socket
join as the user (and room) its token names, and only hands TURN credentials to
holders of a valid token.

TURN credentials follow the TURN REST API draft (draft-uberti-behave-turn-rest-00)
that coturn implements with ``--use-auth-secret``: the username is
``<unix expiry>:<userId>`` and the password is base64(HMAC-SHA1(secret, username)).
Several secrets can be configured for rotation: credentials are signed with the
first, and coturn accepts any of them.

Secrets are kept out of reprs, logs and results on purpose.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from .exceptions import ConfigurationError, WebrtcLabError

__all__ = [
    "AuthError",
    "Identity",
    "TokenAuthority",
    "TurnConfig",
    "TurnCredentials",
    "turn_credentials",
]

_ALGORITHM = "HS256"
# RFC 7518 section 3.2: an HS256 key should be at least as long as the hash output.
MIN_SECRET_BYTES = 32


class AuthError(WebrtcLabError, PermissionError):
    """A token or credential was refused; ``code`` names why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _secret_bytes(secret: str | bytes, what: str) -> bytes:
    if not isinstance(secret, (str, bytes)):
        raise ConfigurationError(f"{what} must be a string, got {type(secret).__name__}")
    raw = secret.encode() if isinstance(secret, str) else secret
    if len(raw) < MIN_SECRET_BYTES:
        # The value itself is never quoted: it is a secret.
        raise ConfigurationError(
            f"{what} must be at least {MIN_SECRET_BYTES} bytes long, got {len(raw)}"
        )
    return raw


def _check_ttl(ttl_s: float, what: str = "ttl_s") -> None:
    if not (isinstance(ttl_s, (int, float)) and math.isfinite(ttl_s) and ttl_s > 0):
        raise ConfigurationError(f"{what} must be a positive number of seconds, got {ttl_s!r}")


def _check_user(user_id: object) -> str:
    # Imported here: the signaling package imports this module for its server.
    from .signaling.messages import MAX_ID_LENGTH

    if not isinstance(user_id, str) or not user_id:
        raise ConfigurationError(f"user id must be a non-empty string, got {user_id!r}")
    if len(user_id) > MAX_ID_LENGTH:
        raise ConfigurationError(f"user id is longer than {MAX_ID_LENGTH} characters")
    if any(ord(c) < 32 or c == "\x7f" for c in user_id) or ":" in user_id:
        # ':' separates expiry and user id in TURN usernames.
        raise ConfigurationError(f"user id {user_id!r} holds a control character or ':'")
    return user_id


# --- join tokens ------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """What a valid join token proves: who, in which room (None: any), until when."""

    user_id: str
    room: str | None
    expires: float


class TokenAuthority:
    """Issues and verifies join tokens signed with a shared secret.

    Example::

        authority = TokenAuthority(secret)
        token = authority.issue("alice", room="class", ttl_s=3600)
        authority.verify(token).user_id   # "alice"

    :param secret: at least 32 bytes; never logged.
    :param ttl_s: default lifetime of issued tokens.
    :param clock: seconds since the epoch (tests pass a fake one).
    """

    def __init__(
        self,
        secret: str | bytes,
        *,
        ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = _secret_bytes(secret, "join secret")
        _check_ttl(ttl_s)
        self.ttl_s = ttl_s
        self._clock = clock

    def __repr__(self) -> str:
        return f"TokenAuthority(ttl_s={self.ttl_s})"

    def issue(self, user_id: str, *, room: str | None = None, ttl_s: float | None = None) -> str:
        """A token that lets its holder join as ``user_id`` (in ``room`` if given)."""
        _check_user(user_id)
        if room is not None and (not isinstance(room, str) or not room):
            raise ConfigurationError(f"room must be a non-empty string or None, got {room!r}")
        ttl = self.ttl_s if ttl_s is None else ttl_s
        _check_ttl(ttl)
        now = self._clock()
        claims: dict[str, Any] = {"sub": user_id, "iat": int(now), "exp": math.ceil(now + ttl)}
        if room is not None:
            claims["room"] = room
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def verify(self, token: str) -> Identity:
        """The identity ``token`` proves; raises :class:`AuthError` when it proves none."""
        if not isinstance(token, str) or not token:
            raise AuthError("missing-token", "a join token is required")
        try:
            # Expiry is checked against our clock below (PyJWT would use time.time()).
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[_ALGORITHM],
                options={"verify_exp": False, "require": ["sub", "exp"]},
            )
        except jwt.InvalidTokenError as exc:
            raise AuthError("invalid-token", f"the join token is not valid: {exc}") from None
        user_id, room, expires = claims["sub"], claims.get("room"), claims["exp"]
        if (
            not isinstance(user_id, str)
            or not isinstance(expires, (int, float))
            or not (room is None or isinstance(room, str))
        ):
            raise AuthError("invalid-token", "the join token's claims have the wrong types")
        if self._clock() >= expires:
            raise AuthError("expired-token", f'the join token for "{user_id}" has expired')
        return Identity(user_id=user_id, room=room, expires=float(expires))


# --- TURN REST API credentials ------------------------------------------------------------


@dataclass(frozen=True)
class TurnCredentials:
    """Time-limited TURN credentials, in the TURN REST API's JSON form."""

    username: str
    credential: str = field(repr=False)
    ttl: int
    uris: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The endpoint's body; ``iceServers`` can go straight into RTCPeerConnection."""
        return {
            "username": self.username,
            "credential": self.credential,
            "ttl": self.ttl,
            "uris": list(self.uris),
            "iceServers": self.ice_servers(),
        }

    def ice_servers(self) -> list[dict[str, Any]]:
        return [{"urls": list(self.uris), "username": self.username, "credential": self.credential}]


def turn_credentials(
    secret: str | bytes,
    user_id: str,
    *,
    ttl_s: int,
    uris: Sequence[str],
    now: float | None = None,
) -> TurnCredentials:
    """Credentials for ``user_id`` valid ``ttl_s`` seconds from ``now``."""
    key = secret.encode() if isinstance(secret, str) else secret
    _check_user(user_id)
    _check_ttl(ttl_s)
    expiry = int((time.time() if now is None else now) + ttl_s)
    username = f"{expiry}:{user_id}"
    digest = hmac.new(key, username.encode(), hashlib.sha1).digest()
    return TurnCredentials(
        username=username,
        credential=base64.b64encode(digest).decode("ascii"),
        ttl=int(ttl_s),
        uris=tuple(uris),
    )


@dataclass(frozen=True)
class TurnConfig:
    """Where the TURN server is and the secrets shared with it.

    :param secrets: every secret the TURN server accepts; credentials are signed
        with the first (rotation: add the new one first, drop the old one later).
    :param uris: ``turn:`` URIs handed to clients.
    :param ttl_s: lifetime of issued credentials.
    """

    secrets: tuple[str, ...] = field(repr=False)
    uris: tuple[str, ...]
    ttl_s: int = 3600

    def __post_init__(self) -> None:
        if isinstance(self.secrets, str) or not self.secrets:
            raise ConfigurationError("TURN secrets must be a non-empty sequence of strings")
        for i, secret in enumerate(self.secrets):
            _secret_bytes(secret, f"TURN secret #{i}")
        if isinstance(self.uris, str) or not self.uris:
            raise ConfigurationError(f"TURN uris must be a non-empty sequence, got {self.uris!r}")
        for uri in self.uris:
            if not isinstance(uri, str) or not uri.startswith(("turn:", "turns:")):
                raise ConfigurationError(f'TURN uri must start with "turn:", got {uri!r}')
        if isinstance(self.ttl_s, bool) or not isinstance(self.ttl_s, int) or self.ttl_s < 1:
            raise ConfigurationError(f"TURN ttl_s must be a positive integer, got {self.ttl_s!r}")
        object.__setattr__(self, "secrets", tuple(self.secrets))
        object.__setattr__(self, "uris", tuple(self.uris))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> TurnConfig | None:
        """From ``WEBRTCLAB_TURN_SECRETS`` (comma-separated), ``..._URIS`` and ``..._TTL``.

        None when no secret is set.
        """
        env = os.environ if environ is None else environ
        secrets = [s for s in env.get("WEBRTCLAB_TURN_SECRETS", "").split(",") if s]
        if not secrets:
            return None
        uris = [u for u in env.get("WEBRTCLAB_TURN_URIS", "").split(",") if u]
        ttl = env.get("WEBRTCLAB_TURN_TTL", "3600")
        if not ttl.isdigit():
            raise ConfigurationError(f"WEBRTCLAB_TURN_TTL must be an integer, got {ttl!r}")
        return cls(secrets=tuple(secrets), uris=tuple(uris), ttl_s=int(ttl))

    def credentials(
        self, user_id: str, *, ttl_s: int | None = None, now: float | None = None
    ) -> TurnCredentials:
        """Fresh credentials for ``user_id``, signed with the newest secret."""
        return turn_credentials(
            self.secrets[0],
            user_id,
            ttl_s=self.ttl_s if ttl_s is None else ttl_s,
            uris=self.uris,
            now=now,
        )
