"""En -> Fr translation through an upstream HTTP service.

The upstream is any HTTP/1.1 service answering
`GET /translate?lang=en-fr&text=...` with JSON `{"text": ["..."]}` (the shape of
the web API the original example called). Point TRANSLATOR_UPSTREAM at it, e.g.
`TRANSLATOR_UPSTREAM=http://127.0.0.1:8095 pyrs project.pyrs`.

The handler is `async def`: while it awaits the upstream, pyrs keeps serving other
requests, so one slow upstream call does not stall the server.
"""
import asyncio
import json
import os
import urllib.parse

import pyrs

UPSTREAM_TIMEOUT = 10.0


async def http_get(url, timeout=UPSTREAM_TIMEOUT):
    """A minimal HTTP/1.1 GET over asyncio streams (the standard library has no
    async HTTP client). Returns (status, body bytes)."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


class Translator:
    def __init__(self):
        self.upstream = os.environ.get("TRANSLATOR_UPSTREAM", "http://127.0.0.1:8095")
        print("Translator module is initialized, upstream", self.upstream)

    async def translate(self, request):
        text = request.query.get("text", [""])[0]
        if not text:
            raise pyrs.HTTPError(400, "missing ?text=")
        query = urllib.parse.urlencode({"lang": "en-fr", "text": text})
        try:
            status, body = await http_get(f"{self.upstream}/translate?{query}")
        except (OSError, asyncio.TimeoutError) as e:
            raise pyrs.HTTPError(502, f"translation service unavailable: {e}")
        if status != 200:
            raise pyrs.HTTPError(502, f"translation service answered {status}")
        translated = json.loads(body)["text"][0]
        return {"text": text, "translation": translated}

    def health(self, request):
        return "ok"
