#!/usr/bin/env python3
"""A Kaigi participant written with aiortc (a WebRTC stack Kaigi does not
share code with), speaking docs/protocol.md over a WebSocket.

It joins a room, publishes a moving gradient (H.264) and a sine tone (Opus),
receives everyone else's streams, and prints one JSON line per event:
  joined, published, stream-added, track, received (every 10 video frames),
  client-banned, left, error.
It leaves when stdin closes, and exits 0 after a leave or a forced exit.
"""

import argparse
import asyncio
import fractions
import json
import math
import sys

import aioice.ice
import av
import websockets
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)

# Host candidates on 127.0.0.1 only: the test stays on loopback (aioice
# leaves loopback out by default).
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

WIDTH, HEIGHT, FPS = 320, 240, 30
RATE, PTIME = 48000, 0.02


def out(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


class Gradient(MediaStreamTrack):
    """A moving luma gradient, 320x240 at 30 fps."""

    kind = "video"

    def __init__(self):
        super().__init__()
        self.n = 0
        self.start = None

    async def recv(self):
        loop = asyncio.get_running_loop()
        if self.start is None:
            self.start = loop.time()
        self.n += 1
        wait = self.start + self.n / FPS - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        frame = av.VideoFrame(width=WIDTH, height=HEIGHT, format="yuv420p")
        shift = (self.n * 4) % 256
        row = bytes((x + shift) % 256 for x in range(WIDTH))
        frame.planes[0].update(row * HEIGHT)
        frame.planes[1].update(bytes([128]) * (WIDTH * HEIGHT // 4))
        frame.planes[2].update(bytes([128]) * (WIDTH * HEIGHT // 4))
        frame.pts = self.n * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        return frame


class Tone(MediaStreamTrack):
    """A 660 Hz sine, 20 ms frames."""

    kind = "audio"

    def __init__(self, hz=660.0):
        super().__init__()
        self.hz = hz
        self.sent = 0
        self.start = None

    async def recv(self):
        loop = asyncio.get_running_loop()
        if self.start is None:
            self.start = loop.time()
        samples = int(RATE * PTIME)
        wait = self.start + self.sent / RATE - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        pcm = bytearray()
        for i in range(samples):
            v = int(12000 * math.sin(2 * math.pi * self.hz * (self.sent + i) / RATE))
            pcm += v.to_bytes(2, "little", signed=True)
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(bytes(pcm))
        frame.sample_rate = RATE
        frame.pts = self.sent
        frame.time_base = fractions.Fraction(1, RATE)
        self.sent += samples
        return frame


async def consume(track, user):
    """Counts what arrives on a received track."""
    frames = 0
    size = None
    try:
        while True:
            frame = await track.recv()
            frames += 1
            if track.kind == "video":
                size = [frame.width, frame.height]
                if frames % 10 == 0:
                    out("received", kind="video", user=user, frames=frames, size=size)
            elif frames % 25 == 0:
                out("received", kind="audio", user=user, frames=frames,
                    rate=frame.sample_rate)
    except Exception:
        out("track-ended", kind=track.kind, user=user, frames=frames)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--sdk-app-id", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--user-sig", required=True)
    p.add_argument("--room", type=int, required=True)
    args = p.parse_args()

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tasks = []
    req = 0

    def next_req():
        nonlocal req
        req += 1
        return req

    @pc.on("track")
    def on_track(track):
        # The msid stream id is the publishing user's userId.
        out("track", kind=track.kind)
        tasks.append(asyncio.ensure_future(consume(track, "remote")))

    async with websockets.connect(args.url) as ws:
        async def send(msg):
            await ws.send(json.dumps(msg))

        join_id = next_req()
        await send({"type": "join", "reqId": join_id, "sdkAppId": args.sdk_app_id,
                    "userId": args.user, "userSig": args.user_sig,
                    "roomId": args.room, "role": "anchor", "protocol": 1})
        publish_id = None
        stdin_closed = asyncio.get_running_loop().create_future()

        async def watch_stdin():
            reader = asyncio.StreamReader()
            await asyncio.get_running_loop().connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
            while await reader.readline():
                pass
            stdin_closed.set_result(True)

        # Referenced, so that the tasks are not garbage-collected.
        tasks.append(asyncio.ensure_future(watch_stdin()))

        async def heartbeat(interval):
            while True:
                await asyncio.sleep(interval)
                await send({"type": "ping", "reqId": next_req()})

        while True:
            recv = asyncio.ensure_future(ws.recv())
            done, _ = await asyncio.wait({recv, stdin_closed},
                                         return_when=asyncio.FIRST_COMPLETED)
            if stdin_closed in done:
                leave_id = next_req()
                await send({"type": "leave", "reqId": leave_id})
                # The receive already waiting gets the next message.
                while True:
                    msg = json.loads(await recv)
                    if msg.get("type") == "left" and msg.get("reqId") == leave_id:
                        break
                    recv = asyncio.ensure_future(ws.recv())
                out("left")
                await pc.close()
                return 0
            try:
                msg = json.loads(recv.result())
            except websockets.ConnectionClosed:
                out("error", message="connection closed")
                return 1
            kind = msg.get("type")
            if kind == "joined" and msg.get("reqId") == join_id:
                out("joined", users=msg["users"])
                tasks.append(asyncio.ensure_future(heartbeat(msg["heartbeatIntervalMs"] / 1000)))
                publish_id = next_req()
                await send({"type": "publish", "reqId": publish_id,
                            "audio": True, "video": True})
            elif kind == "offer":
                await pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "offer"))
                if msg.get("publishReqId") == publish_id and publish_id is not None:
                    # Attach the tracks to this offer's new receive-only
                    # m-lines (the server receives on them).
                    sources = {"video": Gradient(), "audio": Tone()}
                    for t in pc.getTransceivers():
                        if (t._offerDirection == "sendonly" and t.sender.track is None
                                and t.kind in sources):
                            t.sender.replaceTrack(sources.pop(t.kind))
                            t.direction = "sendonly"
                answer = await pc.createAnswer()
                await pc.setLocalDescription(answer)
                await send({"type": "answer", "sdp": pc.localDescription.sdp})
            elif kind == "published":
                out("published")
            elif kind in ("stream-added", "stream-removed", "peer-join", "peer-leave"):
                out(kind, user=msg.get("userId"))
            elif kind == "client-banned":
                out("client-banned", reason=msg["reason"], message=msg["message"])
                await pc.close()
                return 0
            elif kind == "error":
                out("error", code=msg["code"], name=msg["name"], message=msg["message"])
                if msg.get("reqId") in (join_id, publish_id):
                    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
