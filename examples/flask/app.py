"""A Flask app on pyrs: `pip install flask && pyrs --app-dir examples/flask app:app`."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return "Hello from Flask on pyrs!"


@app.get("/hello/<name>")
def hello(name):
    return jsonify(hello=name, agent=request.headers.get("User-Agent"))


@app.post("/echo")
def echo():
    return request.get_data()
