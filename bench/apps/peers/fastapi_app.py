"""FastAPI hello (the fastapi-hello scenario): the same file for every ASGI
server that runs it (pyrs, granian, uvicorn, socketify). `/echo` and `/json`
serve the harness's correctness checks."""
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

from common import json_reply

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/", response_class=PlainTextResponse)
async def hello():
    return "Hello, World!"


@app.post("/echo")
async def echo(request: Request):
    return Response(await request.body(), media_type="application/octet-stream")


@app.post("/json")
async def json_echo(request: Request):
    return json_reply(await request.body())
