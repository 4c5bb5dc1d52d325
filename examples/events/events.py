"""Example pyrs streaming: server-sent events from an async generator, and a
plain generator streaming a large download part by part."""
import asyncio
import time

import pyrs


class Events:
    async def clock(self, request):
        """/clock?n=5: one `data:` event a second, as the generator yields them."""
        n = int(request.query.get("n", ["5"])[0])
        for i in range(n):
            if i:
                await asyncio.sleep(1)
            yield f"data: {time.strftime('%H:%M:%S')} ({i + 1}/{n})\n\n"

    def stream(self, request):
        """The clock as a Response: status, headers and content type are the
        handler's; the body is the generator."""
        return pyrs.Response(self.clock(request), content_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})

    def download(self, request):
        """/download?mib=8: a generator of 64 KiB parts with a declared length.
        A slow client pauses it; a client that leaves closes it."""
        mib = int(request.query.get("mib", ["8"])[0])
        part = b"x" * 65536
        return pyrs.Response((part for _ in range(mib * 16)),
                             headers={"Content-Length": str(mib << 20)})
