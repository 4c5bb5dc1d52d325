"""robyn: sync handlers (run on its Rust runtime). Run with --processes/--workers."""
from robyn import Robyn, Response

from common import HOST, PORT, json_reply

app = Robyn(__file__)


@app.get("/")
def hello(request):
    return "Hello, World!"


@app.post("/echo")
def echo(request):
    return Response(status_code=200, headers={"Content-Type": "application/octet-stream"},
                    description=request.body)


@app.post("/json")
def js(request):
    return json_reply(request.body)  # dict -> JSON response


app.start(host=HOST, port=PORT)
