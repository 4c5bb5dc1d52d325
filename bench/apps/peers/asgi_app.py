"""Raw ASGI app (granian ASGI, uvicorn)."""
import json

from common import HELLO, json_reply


def start(ctype, length, status=200):
    return {"type": "http.response.start", "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(length).encode())]}


async def read_body(receive):
    msg = await receive()
    body = msg.get("body", b"")
    if not msg.get("more_body", False):
        return body
    parts = [body]
    while msg.get("more_body", False):
        msg = await receive()
        parts.append(msg.get("body", b""))
    return b"".join(parts)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        # The ws-echo scenario: every message back as it came.
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": msg.get("text"), "bytes": msg.get("bytes")})
    path = scope["path"]
    if path == "/":
        await send(start(b"text/plain", len(HELLO)))
        await send({"type": "http.response.body", "body": HELLO})
    elif path == "/echo":
        body = await read_body(receive)
        await send(start(b"application/octet-stream", len(body)))
        await send({"type": "http.response.body", "body": body})
    elif path == "/json":
        body = json.dumps(json_reply(await read_body(receive))).encode()
        await send(start(b"application/json", len(body)))
        await send({"type": "http.response.body", "body": body})
    else:
        await send(start(b"text/plain", 9, 404))
        await send({"type": "http.response.body", "body": b"Not Found"})
