"""Flask hello (the flask-hello scenario): the same file for every WSGI server
that runs it (pyrs, granian, gunicorn, socketify). `/echo` and `/json` serve the
harness's correctness checks."""
from flask import Flask, Response, request

from common import json_reply

app = Flask(__name__)


@app.get("/")
def hello():
    return "Hello, World!"


@app.post("/echo")
def echo():
    return Response(request.get_data(), content_type="application/octet-stream")


@app.post("/json")
def json_echo():
    return json_reply(request.get_data())
