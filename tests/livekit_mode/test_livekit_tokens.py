"""LiveKit access tokens on byeline's Twirp API: missing, expired, foreign or short of the grant
is refused; JSON bodies work as protobuf ones do; the two kinds of token do not mix."""

from __future__ import annotations

import datetime as dt
import json

import aiohttp
import pytest
from livekit import api
from livekit.protocol import room as lk_room
from livekit.protocol import sip as lk_sip
from livekit_harness import API_KEY, API_SECRET, LiveKitApp


def token(
    *,
    video: api.VideoGrants | None = None,
    sip: api.SIPGrants | None = None,
    ttl: dt.timedelta = dt.timedelta(minutes=5),
    key: str = API_KEY,
    secret: str = API_SECRET,
) -> str:
    t = api.AccessToken(key, secret).with_ttl(ttl)
    if video is not None:
        t.with_grants(video)
    if sip is not None:
        t.with_sip_grants(sip)
    return t.to_jwt()


async def post(
    url: str, path: str, body: dict[str, object], bearer: str | None
) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": "application/json"}
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    async with (
        aiohttp.ClientSession() as s,
        s.post(url + path, data=json.dumps(body), headers=headers) as r,
    ):
        return r.status, await r.json(content_type=None)


LIST_ROOMS = "/twirp/livekit.RoomService/ListRooms"
DELETE_ROOM = "/twirp/livekit.RoomService/DeleteRoom"
LIST_TRUNKS = "/twirp/livekit.SIP/ListSIPInboundTrunk"


def refusals() -> list[tuple[str, str | None, str, int, str]]:
    """(case, bearer, code, status, what the message says)."""
    lists = api.VideoGrants(room_list=True)
    return [
        ("missing", None, "unauthenticated", 401, "missing authorization"),
        (
            "expired",
            token(video=lists, ttl=dt.timedelta(minutes=-5)),
            "unauthenticated",
            401,
            "expired",
        ),
        ("wrong secret", token(video=lists, secret="x" * 40), "unauthenticated", 401, "signature"),
        (
            "foreign key",
            token(video=lists, key="APIsomeoneElse"),
            "unauthenticated",
            401,
            "unknown api key",
        ),
        ("garbage", "not.a.jwt", "unauthenticated", 401, "invalid token"),
        (
            "wrong grant",
            token(video=api.VideoGrants(room_admin=True, room="x")),
            "permission_denied",
            403,
            "roomlist",
        ),
    ]


async def test_list_rooms_refused(lk_app: LiveKitApp) -> None:
    for case, bearer, code, status, says in refusals():
        got_status, body = await post(lk_app.url, LIST_ROOMS, {}, bearer)
        assert (got_status, body["code"]) == (status, code), (case, body)
        assert says in str(body["msg"]).lower(), (case, body)


async def test_grants_per_method(lk_app: LiveKitApp) -> None:
    url = lk_app.url
    # DeleteRoom needs roomCreate, not roomList or roomAdmin.
    admin = token(video=api.VideoGrants(room_admin=True, room="call-x", room_list=True))
    status, body = await post(url, DELETE_ROOM, {"room": "call-x"}, admin)
    assert (status, body["code"]) == (403, "permission_denied"), body
    # A SIP method needs sip.admin; a room grant does not do.
    status, body = await post(url, LIST_TRUNKS, {}, token(video=api.VideoGrants(room_list=True)))
    assert (status, body["code"]) == (403, "permission_denied"), body
    # roomAdmin is for one room only.
    status, body = await post(
        url,
        "/twirp/livekit.RoomService/ListParticipants",
        {"room": "call-y"},
        token(video=api.VideoGrants(room_admin=True, room="call-x")),
    )
    assert (status, body["code"]) == (403, "permission_denied"), body
    # With the right grant: a JSON answer in proto field names.
    status, body = await post(url, LIST_TRUNKS, {}, token(sip=api.SIPGrants(admin=True)))
    assert status == 200, body
    [trunk] = body["items"]  # type: ignore[misc]
    assert trunk["name"] == "Five9 from another data center"
    assert "attributes_to_headers" in trunk
    status, body = await post(
        url,
        "/twirp/livekit.SIP/GetSIPInboundTrunk",
        {"sip_trunk_id": trunk["sip_trunk_id"]},
        token(sip=api.SIPGrants(admin=True)),
    )
    assert status == 200 and body["trunk"]["name"] == trunk["name"], body  # type: ignore[index]
    status, body = await post(
        url, DELETE_ROOM, {"room": "call-x"}, token(video=api.VideoGrants(room_create=True))
    )
    assert (status, body["code"]) == (404, "not_found"), body


async def test_livekit_api_client_with_a_wrong_secret_is_refused(lk_app: LiveKitApp) -> None:
    wrong = api.LiveKitAPI(lk_app.url, API_KEY, "y" * 40)
    try:
        with pytest.raises(api.ServerError) as exc:
            await wrong.room.list_rooms(lk_room.ListRoomsRequest())
        assert (exc.value.status, exc.value.code) == (401, "unauthenticated")
        with pytest.raises(api.ServerError) as exc:
            await wrong.sip.list_inbound_trunk(lk_sip.ListSIPInboundTrunkRequest())
        assert exc.value.code == "unauthenticated"
    finally:
        await wrong.aclose()


async def test_tokens_do_not_mix_with_the_api_bearer_token(lk_app: LiveKitApp) -> None:
    livekit_jwt = token(video=api.VideoGrants(room_list=True))
    async with aiohttp.ClientSession() as s:
        async with s.get(
            lk_app.url + "/calls", headers={"Authorization": f"Bearer {livekit_jwt}"}
        ) as r:
            assert r.status == 401  # a LiveKit token is not byeline's API token
        async with s.get(lk_app.url + "/twirp/livekit.RoomService/ListRooms") as r:
            assert r.status == 404 and (await r.json())["code"] == "bad_route"


async def test_bad_requests_get_twirp_errors(lk_app: LiveKitApp) -> None:
    good = token(video=api.VideoGrants(room_list=True), sip=api.SIPGrants(admin=True))
    headers = {"Authorization": f"Bearer {good}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(
            lk_app.url + "/twirp/livekit.RoomService/CreateRoom",
            json={"name": "x"},
            headers=headers,
        ) as r:
            assert (r.status, (await r.json())["code"]) == (404, "bad_route")
        async with s.post(
            lk_app.url + LIST_ROOMS,
            data=b"\xff\xff\xff",
            headers={**headers, "Content-Type": "application/protobuf"},
        ) as r:
            assert (r.status, (await r.json())["code"]) == (400, "malformed")
        async with s.post(
            lk_app.url + LIST_ROOMS, data="{}", headers={**headers, "Content-Type": "text/plain"}
        ) as r:
            assert (r.status, (await r.json())["code"]) == (404, "bad_route")
        # A trunk LiveKit would refuse is refused with every problem named.
        async with s.post(
            lk_app.url + "/twirp/livekit.SIP/CreateSIPInboundTrunk",
            json={"trunk": {"name": "open", "headers": {"Via": "x"}}},
            headers=headers,
        ) as r:
            body = await r.json()
            assert (r.status, body["code"]) == (400, "invalid_argument"), body
            assert "one of the fields must be set" in body["msg"]
            assert 'trunk.headers["Via"]' in body["msg"]


async def test_the_served_list_is_what_is_served(lk_app: LiveKitApp) -> None:
    from byeline.livekit.control_api import NOT_SERVED, SERVED

    everything = token(
        video=api.VideoGrants(room_list=True, room_create=True, room_admin=True, room="none"),
        sip=api.SIPGrants(admin=True),
    )
    for service, methods in SERVED.items():
        for method in methods:
            status, body = await post(lk_app.url, f"/twirp/{service}/{method}", {}, everything)
            assert body.get("code") != "bad_route", (method, body)
    for service, reasons in NOT_SERVED.items():
        for method in reasons:
            if service.startswith("livekit.") and "," not in service:
                status, body = await post(lk_app.url, f"/twirp/{service}/{method}", {}, everything)
                assert (status, body["code"]) == (404, "bad_route"), (method, body)
