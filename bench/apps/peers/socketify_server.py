"""socketify native App (uWebSockets): sync handlers, body gathered with on_data."""
from socketify import App, AppListenOptions

from common import HELLO, HOST, PORT, fork_workers, json_reply

fork_workers()  # uSockets listens with SO_REUSEPORT: each process binds its own socket
app = App()


def hello(res, req):
    res.end(HELLO)


def with_body(reply):
    def handler(res, req):
        parts = []

        def on_data(res, chunk, is_end):
            if chunk:
                parts.append(chunk)
            if is_end:
                reply(res, b"".join(parts))

        res.on_data(on_data)
    return handler


app.get("/", hello)
app.post("/echo", with_body(lambda res, body: res.end(body)))
app.post("/json", with_body(lambda res, body: res.end(json_reply(body))))  # dict -> JSON
# The ws-echo scenario: every message back as it came.
app.ws("/ws", {"message": lambda ws, message, opcode: ws.send(message, opcode)})
app.listen(AppListenOptions(port=PORT, host=HOST), lambda config: print("listening", flush=True))
app.run()
