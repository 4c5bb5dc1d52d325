"""granian RSGI app."""
import json

from common import HELLO, json_reply

TEXT = [("content-type", "text/plain")]
OCTET = [("content-type", "application/octet-stream")]
JSON = [("content-type", "application/json")]


async def app(scope, proto):
    path = scope.path
    if path == "/":
        proto.response_bytes(200, TEXT, HELLO)
    elif path == "/echo":
        proto.response_bytes(200, OCTET, await proto())
    elif path == "/json":
        body = json.dumps(json_reply(await proto())).encode()
        proto.response_bytes(200, JSON, body)
    else:
        proto.response_bytes(404, TEXT, b"Not Found")
