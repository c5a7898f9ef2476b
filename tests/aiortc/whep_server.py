"""A WHEP server on aiortc, an independent WebRTC stack (Python: its own
ICE, DTLS, SRTP, RTP and VP8/Opus encoders), for testing `p2p receive
--whep` against an implementation nobody here wrote.

    python whep_server.py [--listen 127.0.0.1:0] [--token T] [--seconds S]
                          [--codec vp8|h264]

Each viewer that POSTs an offer to /whep gets its own live test picture
(FFmpeg's testsrc, 640x480 at 30 fps) and a 440 Hz tone, encoded by aiortc;
the answer carries every candidate (aiortc does not trickle, so PATCH is
refused with 405). DELETE /whep/ID ends that viewer's session. --seconds
ends every stream that long after it began, as a live event ends.

Prints its URL on stdout once it listens, then one JSON line per event:
    {"event": "created", "id": …}, {"event": "connected", "id": …},
    {"event": "deleted", "id": …}, {"event": "ended", "id": …}
"""

import argparse
import asyncio
import json
import sys
import uuid

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

MAX_BODY = 64 * 1024


def say(**event):
    print(json.dumps(event), flush=True)


class Server:
    def __init__(self, token, seconds, codec):
        self.token = token
        self.seconds = seconds
        self.codec = codec
        self.sessions = {}

    async def handle(self, reader, writer):
        try:
            method, path, headers, body = await read_request(reader)
            status, extra, payload = await self.route(method, path, headers, body)
        except (ValueError, asyncio.IncompleteReadError) as e:
            status, extra, payload = 400, {}, f"bad request: {e}\n"
        head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
        extra.setdefault("Content-Type", "text/plain")
        # Browser viewers on other origins read the answer and Location.
        extra["Access-Control-Allow-Origin"] = "*"
        extra["Access-Control-Expose-Headers"] = "Location"
        for k, v in extra.items():
            head.append(f"{k}: {v}")
        data = payload.encode()
        head.append(f"Content-Length: {len(data)}")
        head.append("Connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await writer.drain()
        writer.close()

    async def route(self, method, path, headers, body):
        if method == "OPTIONS":
            return 204, {"Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
                         "Access-Control-Allow-Headers": "Authorization, Content-Type"}, ""
        if self.token and headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"WWW-Authenticate": "Bearer"}, "a valid bearer token is required\n"
        if path == "/whep" and method == "POST":
            if headers.get("content-type", "").split(";")[0].strip() != "application/sdp":
                return 415, {}, "an offer must be application/sdp\n"
            return await self.offer(body.decode())
        if path.startswith("/whep/"):
            sid = path[len("/whep/"):]
            if sid not in self.sessions:
                return 404, {}, "no such session\n"
            if method == "DELETE":
                await self.close(sid)
                say(event="deleted", id=sid)
                return 200, {}, ""
            if method == "PATCH":
                return 405, {"Allow": "DELETE"}, "no trickle here\n"
        return 405, {}, "not here\n"

    async def offer(self, sdp):
        sid = uuid.uuid4().hex
        pc = RTCPeerConnection()
        video = MediaPlayer("testsrc=size=640x480:rate=30", format="lavfi")
        audio = MediaPlayer("sine=frequency=440:sample_rate=48000", format="lavfi")
        self.sessions[sid] = (pc, video, audio)

        @pc.on("connectionstatechange")
        async def on_state():
            if pc.connectionState == "connected":
                say(event="connected", id=sid)
            elif pc.connectionState in ("failed", "closed"):
                await self.close(sid)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        for t in pc.getTransceivers():
            if t.kind == "video":
                pc.addTrack(video.video)
                if self.codec:
                    want = [c for c in RTCRtpSender.getCapabilities("video").codecs
                            if c.mimeType.lower() == f"video/{self.codec}"]
                    t.setCodecPreferences(want)
            elif t.kind == "audio":
                pc.addTrack(audio.audio)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        say(event="created", id=sid)
        if self.seconds:
            asyncio.get_running_loop().call_later(
                self.seconds, lambda: asyncio.ensure_future(self.end(sid)))
        return 201, {
            "Content-Type": "application/sdp",
            "Location": f"/whep/{sid}",
        }, pc.localDescription.sdp

    async def end(self, sid):
        if sid in self.sessions:
            await self.close(sid)
            say(event="ended", id=sid)

    async def close(self, sid):
        pc, video, audio = self.sessions.pop(sid, (None, None, None))
        if pc:
            for player in (video, audio):
                for track in (player.video, player.audio):
                    if track:
                        track.stop()
            await pc.close()


REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
           404: "Not Found", 405: "Method Not Allowed", 415: "Unsupported Media Type"}


async def read_request(reader):
    line = (await reader.readline()).decode().strip()
    method, path, _ = line.split(" ", 2)
    headers = {}
    while True:
        h = (await reader.readline()).decode().strip()
        if not h:
            break
        k, _, v = h.partition(":")
        headers[k.strip().lower()] = v.strip()
    size = int(headers.get("content-length", "0"))
    if size > MAX_BODY:
        raise ValueError("body too large")
    body = await reader.readexactly(size) if size else b""
    return method, path.split("?")[0], headers, body


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--token")
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--codec", choices=["vp8", "h264"])
    a = ap.parse_args()
    host, port = a.listen.rsplit(":", 1)
    server = Server(a.token, a.seconds, a.codec)
    srv = await asyncio.start_server(server.handle, host, int(port))
    addr = srv.sockets[0].getsockname()
    print(f"http://{addr[0]}:{addr[1]}/whep", flush=True)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
