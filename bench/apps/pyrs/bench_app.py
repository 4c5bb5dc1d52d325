"""pyrs bench app: the same three handlers every peer in bench/apps/peers has, plus
an async handler for the async scenario of bench/workers."""
import asyncio


class Bench:
    def hello(self, request):
        return "Hello, World!"

    def echo(self, request):
        return request  # the original pyrs echo: answers with the request body

    def json(self, request):
        data = request.json()
        return {"hello": data["name"], "count": data["count"] + 1, "tags": data["tags"]}

    async def sleep(self, request):
        await asyncio.sleep(0.01)
        return "slept"

    async def ws(self, ws):
        # The ws-echo scenario: every message back as it came.
        await ws.accept()
        while (msg := await ws.receive()) is not None:
            await ws.send(msg)
