"""Join tokens, TURN REST credentials and the server's access checks (no coturn here)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from typing import Any

import aiohttp
import jwt
import pytest

from webrtclab import ConfigurationError, SignalingServer
from webrtclab.auth import AuthError, TokenAuthority, TurnConfig, turn_credentials

SECRET = "s" * 32
OTHER_SECRET = "o" * 32
TURN = TurnConfig(secrets=(SECRET, OTHER_SECRET), uris=("turn:127.0.0.1:3478",), ttl_s=600)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- join tokens -------------------------------------------------------------------------


def test_token_round_trip_binds_user_room_and_expiry() -> None:
    clock = FakeClock()
    authority = TokenAuthority(SECRET, clock=clock)
    identity = authority.verify(authority.issue("alice", room="class", ttl_s=60))
    assert (identity.user_id, identity.room, identity.expires) == ("alice", "class", clock.now + 60)
    assert authority.verify(authority.issue("bob")).room is None


def test_token_expires_on_the_authority_clock() -> None:
    clock = FakeClock()
    authority = TokenAuthority(SECRET, clock=clock)
    token = authority.issue("alice", ttl_s=10)
    clock.now += 9.5
    assert authority.verify(token).user_id == "alice"
    clock.now += 0.5
    with pytest.raises(AuthError) as info:
        authority.verify(token)
    assert info.value.code == "expired-token"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-jwt",
        TokenAuthority(OTHER_SECRET).issue("alice"),  # another secret
        jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"),  # no expiry
        jwt.encode({"sub": 5, "exp": 2**40}, SECRET, algorithm="HS256"),  # wrong type
        jwt.encode({"sub": "a", "exp": 2**40, "room": 1}, SECRET, algorithm="HS256"),
        # "alg: none" must never be accepted.
        jwt.encode({"sub": "alice", "exp": 2**40}, None, algorithm="none"),  # type: ignore[arg-type]
    ],
    ids=["empty", "garbage", "other-secret", "no-exp", "sub-type", "room-type", "alg-none"],
)
def test_bad_tokens_are_refused(token: str) -> None:
    with pytest.raises(AuthError) as info:
        TokenAuthority(SECRET).verify(token)
    assert info.value.code in {"missing-token", "invalid-token"}


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("short",), {}, "at least 32 bytes"),
        ((SECRET,), {"ttl_s": 0}, "positive"),
        ((SECRET,), {"ttl_s": float("nan")}, "positive"),
    ],
)
def test_authority_refuses_bad_configuration(
    args: tuple[Any, ...], kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        TokenAuthority(*args, **kwargs)


@pytest.mark.parametrize("user", ["", "a" * 65, "bad\x00id", "a:b", 5])
def test_issue_refuses_bad_user_ids(user: Any) -> None:
    with pytest.raises(ConfigurationError):
        TokenAuthority(SECRET).issue(user)


def test_secrets_stay_out_of_reprs() -> None:
    assert SECRET not in repr(TokenAuthority(SECRET))
    assert SECRET not in repr(TURN)
    credentials = TURN.credentials("alice")
    assert credentials.credential not in repr(credentials)


# --- TURN REST API credentials ---------------------------------------------------------------


def test_turn_credentials_follow_the_rest_api_draft() -> None:
    credentials = turn_credentials(SECRET, "alice", ttl_s=600, uris=["turn:x"], now=1000.4)
    assert credentials.username == "1600:alice"
    expected = hmac.new(SECRET.encode(), b"1600:alice", hashlib.sha1).digest()
    assert base64.b64decode(credentials.credential) == expected
    body = credentials.to_json()
    assert body["ttl"] == 600 and body["uris"] == ["turn:x"]
    assert body["iceServers"] == [
        {"urls": ["turn:x"], "username": "1600:alice", "credential": credentials.credential}
    ]


def test_turn_config_signs_with_the_first_secret() -> None:
    credentials = TURN.credentials("alice", now=0)
    first = turn_credentials(SECRET, "alice", ttl_s=600, uris=TURN.uris, now=0)
    assert credentials == first


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"secrets": (), "uris": ("turn:x",)}, "non-empty"),
        ({"secrets": SECRET, "uris": ("turn:x",)}, "non-empty sequence"),
        ({"secrets": ("short",), "uris": ("turn:x",)}, "at least 32"),
        ({"secrets": (SECRET,), "uris": ()}, "uris"),
        ({"secrets": (SECRET,), "uris": ("stun:x",)}, "turn:"),
        ({"secrets": (SECRET,), "uris": ("turn:x",), "ttl_s": 0}, "ttl_s"),
        ({"secrets": (SECRET,), "uris": ("turn:x",), "ttl_s": 1.5}, "ttl_s"),
    ],
)
def test_turn_config_refuses_bad_values(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        TurnConfig(**kwargs)


def test_turn_config_from_environment() -> None:
    assert TurnConfig.from_env({}) is None
    config = TurnConfig.from_env(
        {
            "WEBRTCLAB_TURN_SECRETS": f"{SECRET},{OTHER_SECRET}",
            "WEBRTCLAB_TURN_URIS": "turn:127.0.0.1:3478",
            "WEBRTCLAB_TURN_TTL": "120",
        }
    )
    assert config is not None
    assert config.secrets == (SECRET, OTHER_SECRET) and config.ttl_s == 120
    with pytest.raises(ConfigurationError, match="TTL"):
        TurnConfig.from_env({"WEBRTCLAB_TURN_SECRETS": SECRET, "WEBRTCLAB_TURN_TTL": "soon"})


# --- the server: TURN credentials endpoint ----------------------------------------------------


async def _get(
    session: aiohttp.ClientSession, url: str, token: str | None = None, **headers: str
) -> tuple[int, dict[str, Any], Any]:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with session.get(url, headers=headers) as response:
        body = await response.json(content_type=None)
        return response.status, dict(response.headers), body


async def test_endpoint_hands_credentials_to_the_token_holder(
    make_server: Any, http: aiohttp.ClientSession
) -> None:
    server: SignalingServer = await make_server(join_secret=SECRET, turn=TURN)
    url = server.http_url + "/api/turn-credentials"
    status, headers, body = await _get(http, url, server.issue_token("alice"))
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert body["username"].endswith(":alice") and body["ttl"] == 600
    assert body["uris"] == list(TURN.uris)
    expected = hmac.new(SECRET.encode(), body["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(body["credential"]) == expected
    assert SECRET not in str(body) and OTHER_SECRET not in str(body)


@pytest.mark.parametrize(
    ("auth", "code"),
    [
        (None, "missing-token"),
        ("Basic YWxpY2U6eA==", "missing-token"),
        ("Bearer ", "missing-token"),
        ("Bearer garbage", "invalid-token"),
        ("Bearer " + TokenAuthority(OTHER_SECRET).issue("alice"), "invalid-token"),
        ("Bearer " + TokenAuthority(SECRET, clock=lambda: 0).issue("alice"), "expired-token"),
        ("Bearer static-token", "user-token-required"),
    ],
    ids=["none", "basic", "empty", "garbage", "other-secret", "expired", "static-token"],
)
async def test_endpoint_refuses_missing_or_bad_auth(
    make_server: Any, http: aiohttp.ClientSession, auth: str | None, code: str
) -> None:
    server = await make_server(join_secret=SECRET, token="static-token", turn=TURN)
    url = server.http_url + "/api/turn-credentials"
    # A token in the query string is not enough: it would end up in logs and history.
    url += "?token=" + server.issue_token("alice")
    headers = {} if auth is None else {"Authorization": auth}
    status, response_headers, body = await _get(http, url, **headers)
    assert status == 401
    assert body == {"error": code}
    assert response_headers["WWW-Authenticate"].startswith("Bearer")


async def test_endpoint_needs_turn_and_join_tokens(
    make_server: Any, http: aiohttp.ClientSession
) -> None:
    no_turn = await make_server(join_secret=SECRET)
    status, _, body = await _get(
        http, no_turn.http_url + "/api/turn-credentials", no_turn.issue_token("alice")
    )
    assert (status, body) == (404, {"error": "turn-not-configured"})
    # TURN without join tokens: there is no identity to issue credentials to.
    no_tokens = await make_server(turn=TURN)
    status, _, body = await _get(http, no_tokens.http_url + "/api/turn-credentials", "x")
    assert (status, body) == (401, {"error": "join-tokens-not-configured"})


# --- the server: join tokens on the signaling socket -------------------------------------------


async def test_join_token_binds_user_and_room(make_server: Any, connect: Any) -> None:
    server: SignalingServer = await make_server(join_secret=SECRET)
    token = server.issue_token("alice", room="class")
    client = await connect(server, params={"token": token})
    await client.send({"type": "join", "roomId": "class", "userId": "mallory"})
    error = await client.expect_error("forbidden")
    assert "issued to" in error["message"]
    await client.send({"type": "join", "roomId": "other", "userId": "alice"})
    await client.expect_error("forbidden")
    assert server.dispatcher.rooms() == {}
    joined = await client.join("class", "alice")
    assert joined["type"] == "room-joined"


@pytest.mark.parametrize(
    "token",
    [None, "garbage", TokenAuthority(SECRET, clock=lambda: 0).issue("alice")],
    ids=["none", "garbage", "expired"],
)
async def test_signaling_refuses_sockets_without_a_valid_token(
    make_server: Any, http: aiohttp.ClientSession, token: str | None
) -> None:
    server = await make_server(join_secret=SECRET)
    params = {} if token is None else {"token": token}
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(server.url, params=params)
    assert info.value.status == 401
    assert server.dispatcher.user_count == 0


async def test_static_token_still_allows_any_user(make_server: Any, connect: Any) -> None:
    server = await make_server(join_secret=SECRET, token="static-token")
    client = await connect(server, params={"token": "static-token"})
    assert (await client.join("r", "anyone"))["type"] == "room-joined"


def test_issue_token_needs_a_join_secret() -> None:
    with pytest.raises(ConfigurationError, match="join_secret"):
        SignalingServer().issue_token("alice")


# --- the server: origins ----------------------------------------------------------------------


async def test_origin_allow_list(make_server: Any, http: aiohttp.ClientSession) -> None:
    server = await make_server(allowed_origins=["http://class.example:8000"])
    for origin, allowed in [
        ("http://class.example:8000", True),
        (server.http_url, True),  # the server's own pages
        ("http://evil.example", False),
        ("null", False),
    ]:
        if allowed:
            ws = await http.ws_connect(server.url, headers={"Origin": origin})
            await ws.close()
        else:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect(server.url, headers={"Origin": origin})
            assert info.value.status == 403
    # Non-browser clients send no Origin.
    ws = await http.ws_connect(server.url)
    await ws.close()


@pytest.mark.parametrize(
    ("value", "match"),
    [("http://a", "list of origins"), (["ftp://a"], "http://host:port"), ([5], "http")],
)
def test_origin_allow_list_refuses_bad_values(value: Any, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        SignalingServer(allowed_origins=value)


def test_server_refuses_a_turn_that_is_not_a_config() -> None:
    with pytest.raises(ConfigurationError, match="TurnConfig"):
        SignalingServer(turn={"secrets": [SECRET]})  # type: ignore[arg-type]


async def test_secrets_never_reach_the_logs(
    make_server: Any, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await make_server(join_secret=SECRET, turn=TURN)
    await _get(http, server.http_url + "/api/turn-credentials", server.issue_token("alice"))
    await _get(http, server.http_url + "/api/turn-credentials", "garbage")
    assert SECRET not in caplog.text and OTHER_SECRET not in caplog.text


# --- the lab with join tokens ----------------------------------------------------------------


async def test_lab_peers_join_with_their_own_tokens() -> None:
    from urllib.parse import parse_qs, urlsplit

    from webrtclab import Lab, MediaSpec

    async with Lab(server_options={"join_secret": SECRET}, room="class") as lab:
        await lab.add_peer("alice", media=MediaSpec(width=64, height=48, video="none"))
        assert lab.server.dispatcher.rooms() == {"class": ["alice"]}
        url = urlsplit(lab.invite("bob", ttl_s=60))
        assert url.path == "/" and f"{url.scheme}://{url.netloc}" == lab.server.http_url
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        assert (query["room"], query["user"]) == ("class", "bob")
        assert lab.server.authority is not None
        identity = lab.server.authority.verify(query["token"])
        assert (identity.user_id, identity.room) == ("bob", "class")


async def test_invite_without_tokens_has_none() -> None:
    from webrtclab import Lab

    async with Lab() as lab:
        assert "token=" not in lab.invite("bob")
