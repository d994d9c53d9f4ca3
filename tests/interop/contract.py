#!/usr/bin/env python3
"""The contract test: docs/protocol.md and docs/admin-api.md, checked on the
wire by a client written from those two documents alone (the Python
standard library, websockets, and aiortc for the media negotiation), with
no Kaigi code.

Every check prints "ok   <name>" or "FAIL <name>: <why>"; the exit status
is the number of failures (0: the server does what the documents say).

The server must run with a heartbeat timeout of a few seconds
(--heartbeat-timeout 3) so that the timeout checks are quick; every other
value is the documents' default.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import sys
import time
import urllib.request
import zlib

import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# aiortc, patched to host candidates on loopback only, and its test sources.
from aiortc_peer import Gradient, Tone  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402

ARGS = None
FAILURES = []
TIMEOUT = 10.0

BANNED_MESSAGES = {
    "duplicate-user-id": "client was banned because of duplicated userId joining the room.",
    "removed-by-admin": "client was banned because of you got banned by account admin",
    "room-dismissed": "client was banned because of the room has been disbanded by the admin.",
}
# The newest protocol version, as the document's title names it: one past
# it is refused.
with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "protocol.md")) as _doc:
    NEWEST = int(re.search(r"^# Kaigi signaling protocol \(version (\d+)\)", _doc.read(), re.M).group(1))
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def check(name, cond, detail=""):
    if cond:
        print(f"ok   {name}", flush=True)
    else:
        print(f"FAIL {name}: {detail}", flush=True)
        FAILURES.append(name)
    return cond


# --- UserSig, as protocol.md's "UserSig" section makes it -------------------

def usersig(app, key, user, expire=86400, now=None):
    t = int(time.time()) if now is None else now
    content = (f"TLS.identifier:{user}\nTLS.sdkappid:{app}\n"
               f"TLS.time:{t}\nTLS.expire:{expire}\n")
    sig = base64.b64encode(hmac.new(key.encode(), content.encode(), hashlib.sha256).digest())
    doc = {"TLS.ver": "2.0", "TLS.identifier": user, "TLS.sdkappid": app,
           "TLS.expire": expire, "TLS.time": t, "TLS.sig": sig.decode()}
    raw = base64.b64encode(zlib.compress(json.dumps(doc, separators=(",", ":")).encode()))
    return raw.decode().replace("+", "*").replace("/", "-").replace("=", "_")


# --- A signaling connection --------------------------------------------------

class Closed(Exception):
    def __init__(self, code, reason):
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


class Conn:
    """One WebSocket, with an optional aiortc peer that answers offers."""

    def __init__(self, ws):
        self.ws = ws
        self.req = 0
        self.pc = None
        self.publish_req = None
        self.offers = []

    @classmethod
    async def open(cls, keepalive=True):
        # WebSocket pings count as heartbeats (the server's timeout here is
        # a few seconds); the heartbeat checks open silent connections.
        interval = 0.5 if keepalive else None
        return cls(await connect(ARGS.url, max_size=2**20, ping_interval=interval))

    def next_req(self):
        self.req += 1
        return self.req

    async def send(self, msg):
        await self.ws.send(json.dumps(msg) if isinstance(msg, dict) else msg)

    async def recv(self, timeout=TIMEOUT):
        try:
            text = await asyncio.wait_for(self.ws.recv(), timeout)
        except ConnectionClosed as e:
            rcvd = e.rcvd
            raise Closed(rcvd.code if rcvd else 1006, rcvd.reason if rcvd else "")
        return json.loads(text)

    async def request(self, msg):
        """Sends a request and returns its reply (the message with its reqId)."""
        rid = self.next_req()
        await self.send({**msg, "reqId": rid})
        reply, _ = await self.until(lambda m: m.get("reqId") == rid)
        return reply

    async def until(self, pred, timeout=TIMEOUT):
        """Reads (answering offers) until pred; returns it and what came before."""
        seen = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"not within {timeout} s; saw {[m.get('type') for m in seen]}")
            m = await self.recv(left)
            if m.get("type") == "offer":
                self.offers.append(m)
                if self.pc is not None:
                    await self.answer(m)
            if pred(m):
                return m, seen
            seen.append(m)

    async def drain(self):
        """Everything that arrives before the reply to a ping sent now."""
        rid = self.next_req()
        await self.send({"type": "ping", "reqId": rid})
        _, seen = await self.until(lambda m: m.get("reqId") == rid)
        return seen

    async def answer(self, offer):
        pc = self.pc
        if offer.get("newConnection"):
            await pc.close()
            pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        if offer.get("publishReqId") is not None and offer.get("publishReqId") == self.publish_req:
            sources = {"video": Gradient(), "audio": Tone()}
            for t in pc.getTransceivers():
                if (t._offerDirection == "sendonly" and t.sender.track is None
                        and t.kind in sources):
                    t.sender.replaceTrack(sources.pop(t.kind))
                    t.direction = "sendonly"
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        await self.send({"type": "answer", "sdp": pc.localDescription.sdp})

    async def closed(self, timeout=TIMEOUT):
        """Reads until the server closes; returns (code, messages before)."""
        seen = []
        try:
            while True:
                seen.append(await self.recv(timeout))
        except Closed as c:
            return c.code, seen

    async def close(self):
        if self.pc is not None:
            await self.pc.close()
        await self.ws.close()


def join_msg(user, room=None, str_room=None, app=None, sig=None, **extra):
    app = ARGS.app if app is None else app
    m = {"type": "join", "sdkAppId": app, "userId": user,
         "userSig": usersig(app, ARGS.key, user) if sig is None else sig}
    if room is not None:
        m["roomId"] = room
    if str_room is not None:
        m["strRoomId"] = str_room
    m.update(extra)
    return m


async def joined(user, room=None, str_room=None, media=False, keepalive=True, **extra):
    c = await Conn.open(keepalive)
    if media:
        c.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    extra.setdefault("protocol", 2)
    reply = await c.request(join_msg(user, room, str_room, **extra))
    assert reply["type"] == "joined", reply
    c.joined = reply
    return c


def is_error(m, name, code):
    return m.get("type") == "error" and m.get("name") == name and m.get("code") == code


# --- The checks ---------------------------------------------------------------

async def check_join_and_presence():
    a = await Conn.open()
    rid = a.next_req()
    await a.send(join_msg("alice", room=1001, role="anchor", protocol=2) | {"reqId": rid})
    j = await a.recv()
    check("joined answers join with its reqId", j.get("type") == "joined" and j.get("reqId") == rid, j)
    check("sessionId is 16 hex digits", re.fullmatch(r"[0-9a-f]{16}", j.get("sessionId", "")), j)
    check("joined echoes roomId and role", j.get("roomId") == 1001 and j.get("role") == "anchor"
          and "strRoomId" not in j, j)
    timeout = j.get("heartbeatTimeoutMs")
    check("heartbeatIntervalMs is a quarter of the timeout, at most 5 s",
          j.get("heartbeatIntervalMs") == min(timeout // 4, 5000), j)
    check("the first user sees nobody", j.get("users") == [], j)

    b = await joined("bob", room=1001, role="audience")
    check("users lists the others in join order",
          b.joined["users"] == [{"userId": "alice", "role": "anchor"}], b.joined)
    m, _ = await a.until(lambda m: m.get("type") == "peer-join")
    check("peer-join carries userId and role", m == {"type": "peer-join", "userId": "bob",
                                                     "role": "audience"}, m)
    c = await joined("carol", room=1001)
    check("users in join order (two)", [u["userId"] for u in c.joined["users"]] == ["alice", "bob"],
          c.joined)
    check("role defaults to anchor", c.joined["role"] == "anchor", c.joined)

    pong = await a.request({"type": "ping"})
    check("ping is answered with pong", pong["type"] == "pong", pong)

    again = await a.request(join_msg("alice", room=1002))
    check("join while in a room: ALREADY_IN_ROOM, open", is_error(again, "ALREADY_IN_ROOM", 4005), again)

    # Role switches.
    r = await b.request({"type": "switch-role", "role": "anchor"})
    check("switch-role is answered with role-switched", r == {"type": "role-switched",
                                                             "reqId": r["reqId"], "role": "anchor"}, r)
    m, _ = await a.until(lambda m: m.get("type") == "peer-role")
    check("the others get peer-role", m == {"type": "peer-role", "userId": "bob", "role": "anchor"}, m)
    r = await b.request({"type": "switch-role", "role": "anchor"})
    check("switching to the same role is answered", r["type"] == "role-switched", r)
    seen = await a.drain()
    check("no peer-role when the role did not change",
          all(m.get("type") != "peer-role" for m in seen), seen)

    left = await b.request({"type": "leave"})
    check("leave is answered with left", left["type"] == "left", left)
    m, _ = await a.until(lambda m: m.get("type") == "peer-leave")
    check("peer-leave reason left", m == {"type": "peer-leave", "userId": "bob", "reason": "left"}, m)
    left = await b.request({"type": "leave"})
    check("leave in no room is answered with left", left["type"] == "left", left)
    back = await b.request(join_msg("bob", room=1001))
    check("a connection can join again after leave", back["type"] == "joined", back)
    await c.close()
    m, _ = await a.until(lambda m: m.get("type") == "peer-leave" and m.get("userId") == "carol")
    check("closing the connection is a leave", m.get("reason") == "left", m)
    for x in (a, b):
        await x.close()


async def check_string_rooms():
    a = await joined("alice", str_room="daily standup")
    check("joined echoes strRoomId", a.joined.get("strRoomId") == "daily standup"
          and "roomId" not in a.joined, a.joined)
    b = await joined("bob", str_room="123")
    n = await joined("nina", room=123)
    check("string room \"123\" and numeric room 123 are different rooms",
          b.joined["users"] == [] and n.joined["users"] == [], (b.joined, n.joined))
    for x in (a, b, n):
        await x.close()


async def check_join_errors():
    c = await Conn.open()
    cases = [
        ("unknown sdkAppId", join_msg("u1", room=1, app=999, sig=usersig(999, ARGS.key, "u1")),
         "UNKNOWN_SDK_APP_ID", 70020),
        ("expired UserSig", join_msg("u1", room=1, sig=usersig(ARGS.app, ARGS.key, "u1", 10,
                                                                int(time.time()) - 100)),
         "USERSIG_EXPIRED", 70001),
        ("undecodable UserSig", join_msg("u1", room=1, sig="not a sig"), "USERSIG_UNDECODABLE", 70003),
        ("empty UserSig", join_msg("u1", room=1, sig=""), "USERSIG_UNDECODABLE", 70003),
        ("forged UserSig", join_msg("u1", room=1, sig=usersig(ARGS.app, "wrong key", "u1")),
         "USERSIG_BAD_SIGNATURE", 70009),
        ("forged and expired: signature first",
         join_msg("u1", room=1, sig=usersig(ARGS.app, "wrong key", "u1", 10, int(time.time()) - 100)),
         "USERSIG_BAD_SIGNATURE", 70009),
        ("UserSig of another user", join_msg("u1", room=1, sig=usersig(ARGS.app, ARGS.key, "u2")),
         "USERSIG_WRONG_USER", 70013),
        ("UserSig of another app",
         join_msg("u1", room=1, sig=usersig(ARGS.other_app, ARGS.other_key, "u1")),
         "USERSIG_WRONG_APP", 70014),
        ("administrator cannot join", join_msg("administrator", room=1), "INVALID_PARAMETER", 4003),
        ("userId with a space", join_msg("a b", room=1), "INVALID_PARAMETER", 4003),
        ("userId of 33 bytes", join_msg("a" * 33, room=1), "INVALID_PARAMETER", 4003),
        ("roomId 0", join_msg("u1", room=0), "INVALID_PARAMETER", 4003),
        ("roomId 4294967295", join_msg("u1", room=4294967295), "INVALID_PARAMETER", 4003),
        ("roomId 4294967297 (a valid type) stays open", join_msg("u1", room=4294967297),
         "INVALID_PARAMETER", 4003),
        ("both roomId and strRoomId", join_msg("u1", room=1, str_room="x"), "INVALID_PARAMETER", 4003),
        ("neither roomId nor strRoomId", join_msg("u1"), "INVALID_PARAMETER", 4003),
        ("strRoomId of 65 bytes", join_msg("u1", str_room="r" * 65), "INVALID_PARAMETER", 4003),
        (f"protocol {NEWEST + 1}", join_msg("u1", room=1, protocol=NEWEST + 1), "UNSUPPORTED_PROTOCOL", 4009),
        ("check order: protocol before userId", join_msg("a b", room=1, protocol=NEWEST + 1),
         "UNSUPPORTED_PROTOCOL", 4009),
        ("check order: room before sdkAppId", join_msg("u1", room=0, app=999),
         "INVALID_PARAMETER", 4003),
        ("check order: sdkAppId before UserSig", join_msg("u1", room=1, app=999, sig="junk"),
         "UNKNOWN_SDK_APP_ID", 70020),
    ]
    for name, msg, err, code in cases:
        r = await c.request(msg)
        check(f"join, {name}: {err}", is_error(r, err, code) and isinstance(r.get("message"), str), r)
    pong = await c.request({"type": "ping"})
    check("join errors leave the connection open", pong["type"] == "pong", pong)
    for name, msg in [("publish", {"type": "publish", "audio": True, "video": True}),
                      ("mute", {"type": "mute", "audio": True}),
                      ("subscribe", {"type": "subscribe", "userId": "x"}),
                      ("unsubscribe", {"type": "unsubscribe", "userId": "x"}),
                      ("switch-role", {"type": "switch-role", "role": "audience"})]:
        r = await c.request(msg)
        check(f"{name} in no room: NOT_IN_ROOM", is_error(r, "NOT_IN_ROOM", 4004), r)
    await c.close()


async def check_closing_faults():
    async def fault(name, frame, err, code, close):
        c = await Conn.open()
        await c.send(frame)
        got, seen = await c.closed()
        errors = [m for m in seen if m.get("type") == "error"]
        check(f"{name}: {err} then close {close}",
              got == close and len(errors) == 1 and is_error(errors[0], err, code), (got, seen))

    await fault("not JSON", "{nope", "INVALID_MESSAGE", 4000, 1008)
    await fault("unknown type", json.dumps({"type": "fly", "reqId": 1}), "INVALID_MESSAGE", 4000, 1008)
    await fault("roomId of the wrong type", json.dumps(join_msg("u1", room="123") | {"reqId": 1}),
                "INVALID_MESSAGE", 4000, 1008)
    await fault("publish without video",
                json.dumps({"type": "publish", "reqId": 1, "audio": True}),
                "INVALID_MESSAGE", 4000, 1008)
    await fault("a binary frame", b"\x00\x01", "INVALID_MESSAGE", 4000, 1003)
    await fault("a message over 16,384 bytes",
                json.dumps({"type": "ping", "reqId": 1, "pad": "x" * 16400}),
                "MESSAGE_TOO_LARGE", 4001, 1009)

    # The rate limit: bursts of 100, 50 per second.
    c = await Conn.open()
    for i in range(300):
        try:
            await c.send({"type": "ping", "reqId": i + 1})
        except ConnectionClosed:
            break
    got, seen = await c.closed()
    check("more frames than the rate limit: RATE_LIMITED then close 1008",
          got == 1008 and any(is_error(m, "RATE_LIMITED", 4002) for m in seen)
          and sum(m.get("type") == "pong" for m in seen) >= 100, (got, len(seen)))


async def check_heartbeat_and_join_deadline():
    async def never_joins():
        c = await Conn.open(keepalive=False)
        start = time.monotonic()
        # Pings do not extend the join deadline.
        async def pinger():
            while True:
                await asyncio.sleep(1)
                try:
                    await c.send({"type": "ping", "reqId": 1})
                except ConnectionClosed:
                    return
        p = asyncio.ensure_future(pinger())
        got, seen = await c.closed(timeout=20)
        p.cancel()
        took = time.monotonic() - start
        check("no join within 10 s: HEARTBEAT_TIMEOUT, close 4000, pings or not",
              got == 4000 and any(is_error(m, "HEARTBEAT_TIMEOUT", 4007) for m in seen)
              and 9.5 <= took <= 13, (got, took))

    async def silent_member():
        a = await joined("alice", room=2001)
        b = await joined("bob", room=2001, keepalive=False)
        timeout = b.joined["heartbeatTimeoutMs"] / 1000

        async def keepalive():
            while True:
                await asyncio.sleep(a.joined["heartbeatIntervalMs"] / 1000)
                await a.send({"type": "ping", "reqId": 99})
        k = asyncio.ensure_future(keepalive())
        start = time.monotonic()
        got, seen = await b.closed(timeout=timeout + 5)
        took = time.monotonic() - start
        check("a silent client: HEARTBEAT_TIMEOUT, close 4000 after heartbeatTimeoutMs",
              got == 4000 and any(is_error(m, "HEARTBEAT_TIMEOUT", 4007) for m in seen)
              and timeout - 0.5 <= took <= timeout + 3, (got, took, timeout))
        m, _ = await a.until(lambda m: m.get("type") == "peer-leave", timeout=5)
        check("the room gets peer-leave reason timeout",
              m == {"type": "peer-leave", "userId": "bob", "reason": "timeout"}, m)
        k.cancel()
        await a.close()

    await asyncio.gather(never_joins(), silent_member())


async def check_takeover_and_resume():
    obs = await joined("obs", room=3001)
    first = await joined("dup", room=3001, role="anchor")
    await obs.until(lambda m: m.get("type") == "peer-join")
    second = await joined("dup", room=3001, role="audience")
    got, seen = await first.closed()
    banned = [m for m in seen if m.get("type") == "client-banned"]
    check("duplicate userId: the earlier gets client-banned then close 1000",
          got == 1000 and banned == [{"type": "client-banned", "reason": "duplicate-user-id",
                                      "message": BANNED_MESSAGES["duplicate-user-id"]}], (got, seen))
    seen = await obs.drain()
    kinds = [m.get("type") for m in seen]
    check("a takeover shows the others no leave and no join",
          "peer-leave" not in kinds and "peer-join" not in kinds, seen)
    check("a takeover with another role shows peer-role",
          {"type": "peer-role", "userId": "dup", "role": "audience"} in seen, seen)
    check("the newest join holds the place", second.joined["users"] == [
        {"userId": "obs", "role": "anchor"}], second.joined)

    c = await Conn.open()
    r = await c.request(join_msg("dup", room=3001, resume=first.joined["sessionId"]))
    check("resume of a forced-out session: SESSION_BANNED with kickReason",
          is_error(r, "SESSION_BANNED", 4006) and r.get("kickReason") == "duplicate-user-id", r)
    r = await c.request(join_msg("fresh", room=3001, resume="0123456789abcdef"))
    check("resume of an unknown session is a fresh join", r.get("type") == "joined", r)
    for x in (obs, second, c):
        await x.close()


def admin(action, body, query=None, method="POST", raw=None, headers=None):
    q = query if query is not None else admin_query()
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(f"{ARGS.http}/api/{action}?{q}", data=data, method=method,
                                 headers=headers or {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
        status = resp.status
        out = json.loads(resp.read())
    if status != 200:
        check(f"{action}: HTTP 200", False, status)
    return out["Response"]


def admin_query(app=None, identifier="administrator", sig=None):
    app = ARGS.app if app is None else app
    sig = usersig(app, ARGS.key, identifier, 300) if sig is None else sig
    return f"sdkappid={app}&identifier={identifier}&usersig={sig}&random=7&contenttype=json"


def admin_error(resp, code):
    return (resp.get("Error", {}).get("Code") == code and isinstance(resp["Error"].get("Message"), str)
            and UUID.match(resp.get("RequestId", "")))


async def check_admin():
    a = await joined("alice", room=4001)
    b = await joined("bob", room=4001, role="audience")
    s = await joined("sam", str_room="ops")
    await a.until(lambda m: m.get("type") == "peer-join")

    d = admin("DescribeRoom", {"SdkAppId": ARGS.app, "RoomId": 4001})
    check("DescribeRoom: RoomId, RoomIdType 0, CreateTime, Total, Users in join order",
          d.get("RoomId") == 4001 and d.get("RoomIdType") == 0 and isinstance(d.get("CreateTime"), int)
          and d.get("Total") == 2 and [(u["UserId"], u["Role"]) for u in d.get("Users", [])]
          == [("alice", "anchor"), ("bob", "audience")]
          and all(isinstance(u.get("JoinTime"), int) for u in d["Users"])
          and UUID.match(d.get("RequestId", "")), d)
    d = admin("DescribeRoom", {"SdkAppId": ARGS.app, "RoomId": "ops"})
    check("DescribeRoom of a string room: RoomIdType 1", d.get("RoomId") == "ops"
          and d.get("RoomIdType") == 1 and d.get("Total") == 1, d)
    lr = admin("ListRooms", {"SdkAppId": ARGS.app})
    ids = [r["RoomId"] for r in lr.get("Rooms", [])]
    check("ListRooms: numeric rooms first by number, then string rooms",
          ids.index(4001) < ids.index("ops") and lr.get("Total") == len(ids)
          and all({"RoomId", "RoomIdType", "UserCount", "CreateTime"} <= set(r) for r in lr["Rooms"]), lr)
    page = admin("ListRooms", {"SdkAppId": ARGS.app, "Offset": 1, "Limit": 1})
    check("ListRooms pages with Offset and Limit; Total is all rooms",
          page.get("Total") == lr["Total"] and page.get("Rooms") == lr["Rooms"][1:2], page)
    zero = admin("ListRooms", {"SdkAppId": ARGS.app, "Limit": 0})
    check("ListRooms Limit 0: no rooms, the Total", zero.get("Rooms") == [] and zero.get("Total") == lr["Total"], zero)
    past = admin("ListRooms", {"SdkAppId": ARGS.app, "Offset": 10**6})
    check("ListRooms past the end: empty", past.get("Rooms") == [], past)

    errors = [
        ("no query", admin("DismissRoom", {"SdkAppId": ARGS.app, "RoomId": 4001}, query=""),
         "AuthFailure.InvalidAuthorization"),
        ("sdkappid not a number", admin("DismissRoom", {}, query=admin_query().replace(
            f"sdkappid={ARGS.app}", "sdkappid=abc")), "AuthFailure.InvalidAuthorization"),
        ("no such sdkappid", admin("DismissRoom", {}, query=admin_query(app=999, sig="x")),
         "FailedOperation.SdkAppIdNotExist"),
        ("identifier not administrator", admin("DismissRoom", {}, query=admin_query(
            identifier="alice")), "AuthFailure.UnauthorizedOperation"),
        ("forged sig", admin("DismissRoom", {}, query=admin_query(sig=usersig(
            ARGS.app, "wrong", "administrator"))), "AuthFailure.SignatureFailure"),
        ("expired sig", admin("DismissRoom", {}, query=admin_query(sig=usersig(
            ARGS.app, ARGS.key, "administrator", 10, int(time.time()) - 100))), "AuthFailure.SignatureExpire"),
        ("GET", admin("DismissRoom", None, method="GET"), "UnsupportedOperation"),
        ("no such action", admin("Explode", {"SdkAppId": ARGS.app}), "InvalidAction"),
        ("a body over 65,536 bytes", admin("DismissRoom", None, raw=b" " * 70000),
         "RequestSizeLimitExceeded"),
        ("an empty body", admin("DismissRoom", None, raw=b""), "InvalidParameter.BodyParamsError"),
        ("a body that is not JSON", admin("DismissRoom", None, raw=b"{nope"), "InvalidParameter.BodyParamsError"),
        ("a body that is not an object", admin("DismissRoom", [1]), "InvalidParameter.BodyParamsError"),
        ("no SdkAppId", admin("DismissRoom", {"RoomId": 4001}), "MissingParameter.SdkAppId"),
        ("another SdkAppId", admin("DismissRoom", {"SdkAppId": ARGS.other_app, "RoomId": 4001}),
         "UnauthorizedOperation.SdkAppId"),
        ("no RoomId", admin("DismissRoom", {"SdkAppId": ARGS.app}), "MissingParameter.RoomId"),
        ("string RoomId for DismissRoom", admin("DismissRoom", {"SdkAppId": ARGS.app, "RoomId": "4001"}),
         "InvalidParameterValue.RoomId"),
        ("numeric RoomId for the ByStrRoomId action",
         admin("DismissRoomByStrRoomId", {"SdkAppId": ARGS.app, "RoomId": 4001}), "InvalidParameterValue.RoomId"),
        ("RoomId out of range", admin("DismissRoom", {"SdkAppId": ARGS.app, "RoomId": 4294967295}),
         "InvalidParameterValue.RoomId"),
        ("no UserIds", admin("RemoveUser", {"SdkAppId": ARGS.app, "RoomId": 4001}), "MissingParameter.UserIds"),
        ("11 UserIds", admin("RemoveUser", {"SdkAppId": ARGS.app, "RoomId": 4001,
                                            "UserIds": [f"u{i}" for i in range(11)]}), "InvalidParameter.UserIds"),
        ("empty UserIds", admin("RemoveUser", {"SdkAppId": ARGS.app, "RoomId": 4001, "UserIds": []}),
         "InvalidParameter.UserIds"),
        ("check order: RoomId before UserIds",
         admin("RemoveUser", {"SdkAppId": ARGS.app, "RoomId": 0, "UserIds": []}), "InvalidParameterValue.RoomId"),
        ("Limit not a whole number", admin("ListRooms", {"SdkAppId": ARGS.app, "Limit": 1.5}), "InvalidParameter"),
        ("a room that does not exist", admin("DismissRoom", {"SdkAppId": ARGS.app, "RoomId": 4999}),
         "FailedOperation.RoomNotExist"),
        ("check order: method before authentication", admin("DismissRoom", None, query="", method="GET"),
         "UnsupportedOperation"),
        ("check order: authentication before action", admin("Explode", {}, query=""),
         "AuthFailure.InvalidAuthorization"),
    ]
    for name, resp, code in errors:
        check(f"admin, {name}: {code}", admin_error(resp, code), resp)
    check("a failed call changed nothing", admin("DescribeRoom", {"SdkAppId": ARGS.app, "RoomId": 4001})
          .get("Total") == 2)
    ct = admin("DescribeRoom", None, raw=json.dumps({"SdkAppId": ARGS.app, "RoomId": 4001}).encode(),
               headers={"Content-Type": "text/plain"})
    check("Content-Type is not checked", ct.get("Total") == 2, ct)

    r = admin("RemoveUser", {"SdkAppId": ARGS.app, "RoomId": 4001, "UserIds": ["bob", "nobody"]})
    check("RemoveUser answers RequestId only; absent users are skipped",
          set(r) == {"RequestId"} and UUID.match(r["RequestId"]), r)
    got, seen = await b.closed()
    check("a removed client: client-banned removed-by-admin, close 1000",
          got == 1000 and {"type": "client-banned", "reason": "removed-by-admin",
                           "message": BANNED_MESSAGES["removed-by-admin"]} in seen, (got, seen))
    m, _ = await a.until(lambda m: m.get("type") == "peer-leave")
    check("the others get peer-leave reason removed",
          m == {"type": "peer-leave", "userId": "bob", "reason": "removed"}, m)

    c = await joined("carl", room=4001)
    await a.until(lambda m: m.get("type") == "peer-join")
    six = await joined("sixer", room=4001, protocol=6)
    await a.until(lambda m: m.get("type") == "peer-join")
    r = admin("DismissRoom", {"SdkAppId": ARGS.app, "RoomId": 4001})
    check("DismissRoom answers RequestId only", set(r) == {"RequestId"}, r)
    got, seen = await six.closed()
    check("protocol 6: client-banned has TRTC's reason and Kaigi's cause",
          got == 1000 and {"type": "client-banned", "reason": "room-disband", "cause": "room-dismissed",
                           "message": BANNED_MESSAGES["room-dismissed"]} in seen, (got, seen))
    for who in (a, c):
        got, seen = await who.closed()
        check("a dismissed room: only client-banned room-dismissed, close 1000",
              got == 1000 and [m for m in seen if m.get("type") not in ("pong", "offer", "peer-join")]
              == [{"type": "client-banned", "reason": "room-dismissed",
                   "message": BANNED_MESSAGES["room-dismissed"]}], (got, seen))
    gone = admin("DescribeRoom", {"SdkAppId": ARGS.app, "RoomId": 4001})
    check("a dismissed room does not exist", admin_error(gone, "FailedOperation.RoomNotExist"), gone)
    r = admin("RemoveUserByStrRoomId", {"SdkAppId": ARGS.app, "RoomId": "ops", "UserIds": ["sam"]})
    got, seen = await s.closed()
    check("RemoveUserByStrRoomId removes from a string room", got == 1000 and any(
        m.get("reason") == "removed-by-admin" for m in seen), (r, got, seen))
    gone = admin("DescribeRoom", {"SdkAppId": ARGS.app, "RoomId": "ops"})
    check("the last user removed: the room is gone", admin_error(gone, "FailedOperation.RoomNotExist"), gone)

    with urllib.request.urlopen(f"{ARGS.http}/healthz", timeout=TIMEOUT) as resp:
        check("/healthz says ok", resp.read().decode().strip() == "ok")
    with urllib.request.urlopen(f"{ARGS.http}/metrics", timeout=TIMEOUT) as resp:
        text = resp.read().decode()
    names = ["kaigi_connections", "kaigi_rooms", "kaigi_participants", "kaigi_joins_total",
             "kaigi_join_failures_total", "kaigi_kicks_total", "kaigi_rejected_connections_total",
             "kaigi_admin_calls_total", "kaigi_media_datagrams_dropped_total"]
    check("/metrics has every documented metric", all(n in text for n in names),
          [n for n in names if n not in text])
    check("kick reasons are client-banned's", 'kaigi_kicks_total{reason="removed-by-admin"}' in text
          and 'kaigi_kicks_total{reason="room-dismissed"}' in text)


def m_lines(sdp):
    return [s for s in sdp.split("\r\nm=")[1:]]


async def check_media():
    # Bob is in the room first and auto-subscribed; Alice publishes.
    bob = await joined("bob", room=5001, media=True)
    alice = await joined("alice", room=5001, media=True)
    await bob.until(lambda m: m.get("type") == "peer-join")

    r = await alice.request({"type": "publish", "audio": False, "video": False})
    check("publish of neither kind: INVALID_PARAMETER", is_error(r, "INVALID_PARAMETER", 4003), r)
    r = await alice.request({"type": "mute", "video": True})
    check("mute with nothing published: NOT_PUBLISHING", is_error(r, "NOT_PUBLISHING", 4013), r)
    r = await alice.request({"type": "subscribe", "userId": "bob"})
    check("subscribe to a user who publishes nothing: STREAM_NOT_FOUND",
          is_error(r, "STREAM_NOT_FOUND", 4014), r)
    r = await alice.request({"type": "subscribe", "userId": "alice"})
    check("subscribe to oneself: STREAM_NOT_FOUND", is_error(r, "STREAM_NOT_FOUND", 4014), r)
    r = await alice.request({"type": "subscribe", "userId": "a b"})
    check("subscribe to an invalid userId: INVALID_PARAMETER", is_error(r, "INVALID_PARAMETER", 4003), r)
    r = await alice.request({"type": "unsubscribe", "userId": "bob"})
    check("unsubscribe when not subscribed: unsubscribed",
          r == {"type": "unsubscribed", "reqId": r["reqId"], "userId": "bob"}, r)

    rid = alice.next_req()
    alice.publish_req = rid
    await alice.send({"type": "publish", "reqId": rid, "audio": True, "video": True})
    published, _ = await alice.until(lambda m: m.get("reqId") == rid)
    check("publish is answered with published after the answer",
          published == {"type": "published", "reqId": rid}, published)
    offer = next((o for o in alice.offers if o.get("publishReqId") == rid), None)
    check("the publish offer carries publishReqId", offer is not None, alice.offers)
    if offer:
        sdp = offer["sdp"]
        check("offers carry every candidate (no trickle), BUNDLE and rtcp-mux",
              "a=candidate:" in sdp and "a=group:BUNDLE" in sdp and "a=rtcp-mux" in sdp
              and "a=fingerprint:" in sdp, sdp)
        check("H.264 constrained baseline, payload type 102, with nack, pli and fir",
              "a=rtpmap:102 H264/90000" in sdp and "profile-level-id=42e01f" in sdp
              and "packetization-mode=1" in sdp and "a=rtcp-fb:102 nack\r\n" in sdp
              and "a=rtcp-fb:102 nack pli" in sdp and "a=rtcp-fb:102 ccm fir" in sdp, sdp)
        check("Opus 48 kHz, payload type 111, in-band FEC",
              "a=rtpmap:111 opus/48000/2" in sdp and "useinbandfec=1" in sdp, sdp)
        recv = [m for m in m_lines(sdp) if "a=recvonly" in m]
        check("publish adds one receive-only m-line per kind",
              sorted(m.split(" ")[0] for m in recv) == ["audio", "video"], sdp)

    added, before = await bob.until(lambda m: m.get("type") == "stream-added")
    check("stream-added carries the stream's kinds and mute state",
          added == {"type": "stream-added", "userId": "alice", "audio": True, "video": True,
                    "audioMuted": False, "videoMuted": False}, added)
    check("stream-added comes before the offer that carries the stream",
          not any(m.get("type") == "offer" for m in before), before)
    sub_offer, _ = await bob.until(lambda m: m.get("type") == "offer")
    check("the subscriber's offer: msid stream id is the publisher's userId, send-only",
          "a=msid:alice " in sub_offer["sdp"] and "a=sendonly" in sub_offer["sdp"], sub_offer["sdp"])

    r = await alice.request({"type": "publish", "audio": True, "video": True})
    check("publish while publishing: ALREADY_PUBLISHING", is_error(r, "ALREADY_PUBLISHING", 4011), r)

    r = await alice.request({"type": "mute", "video": True})
    check("mute is answered with muted", r == {"type": "muted", "reqId": r["reqId"]}, r)
    m, _ = await bob.until(lambda m: m.get("type") == "stream-updated")
    check("stream-updated carries both mute states",
          m == {"type": "stream-updated", "userId": "alice", "audioMuted": False, "videoMuted": True}, m)

    r = await bob.request({"type": "subscribe", "userId": "alice", "video": False})
    check("subscribed says what will be received",
          r == {"type": "subscribed", "reqId": r["reqId"], "userId": "alice", "audio": True, "video": False}, r)
    o, _ = await bob.until(lambda m: m.get("type") == "offer")
    live = [m.split(" ")[0] for m in m_lines(o["sdp"]) if "a=msid:alice " in m and "a=sendonly" in m]
    check("a new subscription replaces the earlier one", live == ["audio"], o["sdp"])

    # A newcomer: joined, then stream-added, then the offer.
    carol = await Conn.open()
    carol.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    rid = carol.next_req()
    await carol.send(join_msg("carol", room=5001, protocol=2) | {"reqId": rid})
    first = await carol.recv()
    check("a newcomer gets joined first", first.get("type") == "joined", first)
    m, before = await carol.until(lambda m: m.get("type") == "offer")
    check("a newcomer gets stream-added before the offer",
          [x.get("type") for x in before] == ["stream-added"], before)

    rid = alice.next_req()
    await alice.send({"type": "unpublish", "reqId": rid})
    r, _ = await alice.until(lambda m: m.get("reqId") == rid)
    check("unpublish is answered with unpublished", r == {"type": "unpublished", "reqId": rid}, r)
    removed, before = await bob.until(lambda m: m.get("type") == "stream-removed")
    check("stream-removed names the user", removed == {"type": "stream-removed", "userId": "alice"}, removed)
    check("stream-removed comes before the offer that ends the stream",
          not any(m.get("type") == "offer" for m in before), before)
    o, _ = await bob.until(lambda m: m.get("type") == "offer")
    live = [m for m in m_lines(o["sdp"]) if "a=msid:alice " in m and "a=sendonly" in m]
    check("the next offer ends the stream's m-lines", live == [], o["sdp"])

    # An answer that crossed a leave is ignored.
    await carol.request({"type": "leave"})
    await carol.send({"type": "answer", "sdp": "v=0\r\n"})
    seen = await carol.drain()
    check("an answer with no offer outstanding is ignored: no error, still open",
          all(m.get("type") != "error" for m in seen), seen)

    r = await carol.request(join_msg("carol", room=5001, role="audience"))
    r = await carol.request({"type": "publish", "audio": True, "video": True})
    check("publish from an audience: AUDIENCE_CANNOT_PUBLISH", is_error(r, "AUDIENCE_CANNOT_PUBLISH", 4010), r)
    for x in (alice, bob, carol):
        await x.close()


async def check_video_layers():
    # A simulcast publisher alone in its room: nobody needs its larger
    # layers, and after 5 s a protocol 7 publisher is told so; one of
    # protocol 6 is told nothing.
    sizes = [{"width": 640, "height": 480}, {"width": 320, "height": 240},
             {"width": 160, "height": 120}]
    new = await joined("layers7", room=5002, media=True, protocol=7)
    old = await joined("layers6", room=5003, media=True, protocol=6)
    for c in (new, old):
        rid = c.next_req()
        c.publish_req = rid
        await c.send({"type": "publish", "reqId": rid, "audio": True, "video": True,
                      "simulcast": sizes})
        r, _ = await c.until(lambda m: m.get("reqId") == rid)
        check("a simulcast publish is answered with published", r.get("type") == "published", r)
    t0 = time.monotonic()
    m, _ = await new.until(lambda m: m.get("type") == "video-layers")
    waited = time.monotonic() - t0
    check("video-layers: only the smallest layer needed with nobody receiving",
          m == {"type": "video-layers", "active": [False, False, True]}, m)
    check("video-layers: fewer layers only after 5 s unneeded", waited >= 4.5, waited)
    seen = await old.drain()
    check("a protocol 6 publisher gets no video-layers",
          all(x.get("type") != "video-layers" for x in seen), seen)
    for c in (new, old):
        await c.close()


async def check_connection_caps():
    # A plain HTTP request to the WebSocket path without an upgrade is not a
    # session; the caps are tested by the suite (they need many addresses).
    try:
        async with connect(ARGS.url) as ws:
            await ws.send(json.dumps({"type": "ping", "reqId": 1}))
            check("ping before join is answered", json.loads(await ws.recv())["type"] == "pong")
    except InvalidStatus as e:
        check("the upgrade succeeds", False, e)


async def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, help="ws://HOST:PORT/ws")
    p.add_argument("--http", required=True, help="http://HOST:PORT")
    p.add_argument("--app", type=int, required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--other-app", type=int, required=True)
    p.add_argument("--other-key", required=True)
    ARGS = p.parse_args()
    print(f"websockets {websockets.__version__}", flush=True)
    for group in (check_connection_caps, check_join_and_presence, check_string_rooms,
                  check_join_errors, check_closing_faults, check_takeover_and_resume,
                  check_admin, check_media):
        try:
            await group()
        except Exception as e:  # a group that cannot finish fails as a whole
            check(group.__name__, False, f"{type(e).__name__}: {e}")
    # The long waits last, together.
    async def guarded(group):
        try:
            await group()
        except Exception as e:
            check(group.__name__, False, f"{type(e).__name__}: {e}")
    await asyncio.gather(guarded(check_heartbeat_and_join_deadline), guarded(check_video_layers))
    print(f"{len(FAILURES)} failed", flush=True)
    return min(len(FAILURES), 100)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
