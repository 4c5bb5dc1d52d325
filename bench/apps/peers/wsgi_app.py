"""WSGI app (granian WSGI, bjoern, meinheld)."""
import json

from common import HELLO, json_reply

HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))]


def read_body(environ):
    n = int(environ.get("CONTENT_LENGTH") or 0)
    return environ["wsgi.input"].read(n) if n else b""


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        start_response("200 OK", HELLO_HEADERS)
        return [HELLO]
    if path == "/echo":
        body = read_body(environ)
        ctype = "application/octet-stream"
    elif path == "/json":
        body = json.dumps(json_reply(read_body(environ))).encode()
        ctype = "application/json"
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        return [b"Not Found"]
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]
