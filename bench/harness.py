#!/usr/bin/env python3
"""pyrs benchmark harness: run by bench/run (see bench/README.md).

Measures pyrs and its Python peers one server at a time on 127.0.0.1 with wrk,
checking every cell for correctness first, and writes bench/RESULTS.md.
Standard library only; the peers live in bench/.venv (installed by `install_peers`).
"""
import argparse
import base64
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
APPS = os.path.join(BENCH, "apps")
PEERS_DIR = os.path.join(APPS, "peers")
# PYRS_BENCH_BIN: another pyrs binary in place of the release build (A/B runs).
PYRS_BIN = os.environ.get("PYRS_BENCH_BIN") or os.path.join(ROOT, "target", "release", "pyrs")
# The ws-echo scenario's load generator (wrk speaks no WebSocket), built by bench/run.
WSLOAD = os.path.join(BENCH, "wsload", "target", "release", "wsload")
VENV = os.path.join(BENCH, ".venv")
VENV_PY = os.path.join(VENV, "bin", "python")
# The Python package's console script, installed into bench/.venv from this tree.
PYRS_WHEEL_BIN = os.path.join(VENV, "bin", "pyrs")
RESULTS = os.path.join(BENCH, "RESULTS.md")
START_MARK = "<!-- bench/run start -->"
END_MARK = "<!-- bench/run end -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# ---------------------------------------------------------------- peers, pinned

# group -> list of pip invocations (each a list of args after `pip install`).
PINS = {
    "granian": [["granian==2.8.9", "uvloop==0.22.1"]],  # its --loop uvloop needs uvloop
    # websockets: uvicorn's WebSocket protocol (the ws-echo scenario).
    "uvicorn": [["uvicorn==0.54.0", "httptools==0.9.0", "uvloop==0.22.1", "websockets==15.0.1"]],
    "socketify": [["socketify==0.0.31"]],  # needs libuv1 (apt)
    "gunicorn": [["gunicorn==23.0.0"]],
    "robyn": [["robyn==0.88.0", "uvloop==0.22.1"]],  # robyn pins uvloop~=0.22.1
    "bjoern": [["bjoern==3.2.2"]],  # builds against libev-dev (apt)
    # meinheld 1.0.2 pins greenlet<0.5, which does not build on CPython 3.11;
    # its C code works with greenlet 3, so install it without its pin.
    "meinheld": [["setuptools", "wheel", "greenlet==3.5.6"],
                 ["--no-deps", "--no-build-isolation", "meinheld==1.0.2"]],
}
# The frameworks of the flask-hello and fastapi-hello scenarios, pinned with every
# package they pull in exactly as tests/frameworks.rs pins them (keep the two alike).
PINS["flask"] = [["flask==3.1.3", "werkzeug==3.1.9", "jinja2==3.1.6", "markupsafe==3.0.4",
                  "itsdangerous==2.2.0", "click==8.5.1", "blinker==1.9.0"]]
PINS["fastapi"] = [["fastapi==0.165.0", "starlette==1.10.0", "pydantic==2.14.4",
                    "pydantic_core==2.50.5", "annotated-types==0.8.0", "annotated-doc==0.0.7",
                    "typing-inspection==0.4.5", "typing_extensions==4.16.0", "anyio==4.16.0",
                    "idna==3.20", "opentelemetry-api==1.45.2", "python-multipart==0.0.34"]]
# The Python package is built from this tree every run (`pip install .`), never
# taken from a stamp: it must be the code under test.
PINS["pyrs-wheel"] = [["--force-reinstall", "--no-deps", ROOT]]
IMPORT_CHECK = {
    "pyrs-wheel": "import pyrs._pyrs",
    "granian": "import granian",
    "uvicorn": "import uvicorn, httptools, uvloop",
    "socketify": "import socketify",
    "gunicorn": "import gunicorn",
    "robyn": "import robyn",
    "bjoern": "import bjoern",
    "meinheld": "from meinheld import server",
    "flask": "import flask",
    "fastapi": "import fastapi",
}
DIST_NAMES = {
    "pyrs-wheel": ["pyrs"],
    "granian": ["granian"], "uvicorn": ["uvicorn", "httptools", "uvloop"],
    "socketify": ["socketify"], "robyn": ["robyn"], "bjoern": ["bjoern"],
    "gunicorn": ["gunicorn"],
    "meinheld": ["meinheld", "greenlet"],
    "flask": ["flask", "werkzeug"],
    "fastapi": ["fastapi", "starlette", "pydantic"],
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def install_peers(groups):
    """pip-install each wanted group into bench/.venv; return {group: None | reason}."""
    status = {}
    pip = [VENV_PY, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for g in groups:
        stamp = os.path.join(VENV, f".installed-{g}")
        want = json.dumps(PINS[g])
        ok_stamp = (g != "pyrs-wheel" and os.path.exists(stamp)
                    and open(stamp).read() == want)
        if not ok_stamp:
            log(f"[install] {g}: pip install {' '.join(' '.join(s) for s in PINS[g])}")
            err = None
            for spec in PINS[g]:
                p = subprocess.run(pip + spec, capture_output=True, text=True)
                if p.returncode != 0:
                    lines = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.strip()]
                    errs = [ln for ln in lines if "error" in ln.lower()]
                    err = "pip install failed: " + ((errs or lines or ["?"])[-1].strip())[:160]
                    break
            if err:
                status[g] = err
                continue
        p = subprocess.run([VENV_PY, "-c", IMPORT_CHECK[g]], capture_output=True, text=True,
                           cwd=PEERS_DIR)
        if p.returncode != 0:
            last = (p.stderr.strip().splitlines() or ["?"])[-1]
            status[g] = "import failed: " + last[:160]
            continue
        if not ok_stamp:
            with open(stamp, "w") as f:
                f.write(want)
        status[g] = None
    return status


def venv_versions(group):
    code = ("import importlib.metadata as m, json, sys;"
            "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))")
    try:
        out = subprocess.run([VENV_PY, "-c", code] + DIST_NAMES[group], capture_output=True,
                             text=True, timeout=30).stdout
        return json.loads(out)
    except Exception:
        return {}


# ---------------------------------------------------------------- scenarios

def post_body(n):
    return (b"0123456789abcdef" * (n // 16 + 1))[:n]


# The folder both pyrs (bench/apps/pyrs/project.pyrs, "static") and nginx serve for
# the static scenarios; prepare_static() writes its files (git-ignored).
STATIC_DIR = os.path.join(APPS, "pyrs", "static")
STATIC_FILES = {"4k.bin": 4096, "64m.bin": 64 * 1024 * 1024}
# The HTTPS scenarios' certificate and key (made by prepare_tls(), git-ignored):
# ECDSA P-256, the same file for pyrs and nginx.
TLS_DIR = os.path.join(APPS, "tls")
TLS_CERT = os.path.join(TLS_DIR, "cert.pem")
TLS_KEY = os.path.join(TLS_DIR, "key.pem")


def prepare_tls():
    """Makes a self-signed certificate for 127.0.0.1 unless there is one."""
    if os.path.exists(TLS_CERT) and os.path.exists(TLS_KEY):
        return
    os.makedirs(TLS_DIR, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "3650", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", TLS_KEY, "-out", TLS_CERT],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def prepare_static():
    """Writes the static scenarios' files unless they are there with their size."""
    for name, size in STATIC_FILES.items():
        path = os.path.join(STATIC_DIR, name)
        if os.path.exists(path) and os.path.getsize(path) == size:
            continue
        with open(path + ".tmp", "wb") as f:
            f.write(os.urandom(size))
        os.replace(path + ".tmp", path)


def static_body(name):
    with open(os.path.join(STATIC_DIR, name), "rb") as f:
        return f.read()


JSON_BODY = b'{"name": "pyrs", "count": 41, "tags": ["fast", "python"]}'
JSON_REPLY = {"hello": "pyrs", "count": 42, "tags": ["fast", "python"]}
HELLO = b"Hello, World!"
ALL_CORES = f"0-{(os.cpu_count() or 1) - 1}"


class Scenario:
    def __init__(self, key, title, path, method="GET", body=b"", ctype=None, depth=1,
                 conns=32, script_args=None, what="", static=None, ws=False, tls=False,
                 unpinned=False, framework=None):
        # Run unpinned even in the pinned mode (servers on every core, wrk -t nproc):
        # what users get from plain `pyrs project.pyrs` on a multi-core machine.
        self.unpinned = unpinned
        self.ws = ws  # a WebSocket echo scenario: wsload instead of wrk
        # A framework's app (flask, fastapi): only the servers running that app run it.
        self.framework = framework
        self.key, self.title, self.path, self.method = key, title, path, method
        self.body, self.ctype, self.depth, self.conns = body, ctype, depth, conns
        self.script_args = script_args  # (script, [args]) or None
        self.what = what
        self.static = static  # the file in STATIC_DIR a static scenario fetches
        self.tls = tls  # over HTTPS (only the TLS servers run it)
        self._want = None

    def want(self):
        if self.static:
            if self._want is None:
                self._want = static_body(self.static)
            return self._want
        return HELLO if self.method == "GET" else self.body

    def request(self, host, path=None):
        path = path or self.path
        head = f"{self.method} {path} HTTP/1.1\r\nHost: {host}\r\n"
        if self.method == "POST":
            head += f"Content-Type: {self.ctype}\r\nContent-Length: {len(self.body)}\r\n"
        return (head + "\r\n").encode() + self.body

    def expect(self, status, headers, body, engine=False):
        """None if the response is right, else what is wrong."""
        if engine:
            return None if status == 404 else f"status {status}, want 404"
        if status != 200:
            return f"status {status}, want 200"
        if self.path == "/json":
            try:
                got = json.loads(body)
            except ValueError:
                return f"body is not JSON: {body[:60]!r}"
            return None if got == JSON_REPLY else f"JSON {got!r}, want {JSON_REPLY!r}"
        want = self.want()
        if body != want:
            return f"body {body[:40]!r}... ({len(body)} B), want {want[:40]!r}... ({len(want)} B)"
        return None


SCENARIOS = [
    Scenario("pipelined-16", "Pipelined GET /, depth 16", "/", depth=16,
             script_args=("pipelined_get.lua", ["16"]),
             what="wrk sends 16 `GET /` in one write per round trip (haywire's benchmark)"),
    Scenario("pipelined-64", "Pipelined GET /, depth 64", "/", depth=64,
             script_args=("pipelined_get.lua", ["64"]),
             what="64 pipelined `GET /` per write; wrk's own core is usually the ceiling"),
    Scenario("keepalive", "Keep-alive GET /", "/",
             what="one `GET /` at a time on each of 32 keep-alive connections"),
    Scenario("post-100", "POST /echo, 100 B", "/echo", "POST", post_body(100),
             "application/octet-stream", script_args=("post.lua", ["100"]),
             what="POST a 100-byte body to /echo, which answers it back"),
    Scenario("keepalive-unpinned", "Keep-alive GET /, unpinned", "/", unpinned=True,
             what="`keepalive` with nothing pinned: servers use every core (pyrs `-t nproc`, "
                  "nginx `worker_processes nproc`), wrk `-t nproc`, all sharing the machine"),
    Scenario("post-100-unpinned", "POST /echo, 100 B, unpinned", "/echo", "POST",
             post_body(100), "application/octet-stream", script_args=("post.lua", ["100"]),
             unpinned=True, what="`post-100` with nothing pinned, as `keepalive-unpinned`"),
    Scenario("post-4k", "POST /echo, 4 KiB", "/echo", "POST", post_body(4096),
             "application/octet-stream", script_args=("post.lua", ["4096"]),
             what="POST a 4 KiB body to /echo"),
    Scenario("post-64k", "POST /echo, 64 KiB", "/echo", "POST", post_body(65536),
             "application/octet-stream", script_args=("post.lua", ["65536"]),
             what="POST a 64 KiB body to /echo"),
    Scenario("conn-1000", "Keep-alive GET /, 1000 connections", "/", conns=1000,
             what="`GET /` on 1000 concurrent keep-alive connections"),
    Scenario("json", "POST /json (json in, dict out)", "/json", "POST", JSON_BODY,
             "application/json", script_args=("post.lua", ["json"]),
             what="POST a small JSON object; the handler parses it and returns a dict"),
    Scenario("static-4k", "Static file, 4 KiB, keep-alive", "/static/4k.bin", static="4k.bin",
             what="GET a 4 KiB file on 32 keep-alive connections: pyrs's reactor and nginx "
                  "serve the same folder"),
    Scenario("ws-echo", "WebSocket echo, 32 B messages", "/ws", ws=True,
             what="32 WebSocket connections, each sending a 32-byte text message and waiting "
                  "for its echo, back to back (bench/wsload); req/s = messages/s"),
    Scenario("static-64m", "Static file, 64 MiB", "/static/64m.bin", conns=4,
             static="64m.bin",
             what="GET a 64 MiB file on 4 keep-alive connections (sendfile on both); "
                  "GB/s = req/s × 64 MiB"),
    Scenario("flask-hello", "Flask hello, keep-alive GET /", "/", framework="flask",
             what="one `GET /` at a time on each of 32 keep-alive connections to a Flask "
                  "app (`apps/peers/flask_app.py`, the same file on every WSGI server)"),
    Scenario("fastapi-hello", "FastAPI hello, keep-alive GET /", "/", framework="fastapi",
             what="one `GET /` at a time on each of 32 keep-alive connections to a FastAPI "
                  "app (`apps/peers/fastapi_app.py`, the same file on every ASGI server)"),
    Scenario("tls-keepalive", "HTTPS keep-alive GET /", "/", tls=True,
             what="one `GET /` at a time on each of 32 keep-alive TLS connections (TLS 1.3, "
                  "one handshake per connection)"),
    Scenario("tls-pipelined-16", "HTTPS pipelined GET /, depth 16", "/", depth=16,
             script_args=("pipelined_get.lua", ["16"]), tls=True,
             what="16 pipelined `GET /` per write over TLS"),
    Scenario("tls-post-4k", "HTTPS POST /echo, 4 KiB", "/echo", "POST", post_body(4096),
             "application/octet-stream", script_args=("post.lua", ["4096"]), tls=True,
             what="POST a 4 KiB body to /echo over TLS"),
    Scenario("tls-static-64m", "HTTPS static file, 64 MiB", "/static/64m.bin", conns=4,
             static="64m.bin", tls=True,
             what="GET a 64 MiB file on 4 TLS connections: both encrypt in user space "
                  "(no sendfile)"),
]
ENGINE_SCENARIOS = {"pipelined-16", "pipelined-64", "keepalive", "conn-1000",
                    "keepalive-unpinned"}
# The unpinned cells of a pinned run: pyrs against its own 404 path and nginx (issue 17).
UNPINNED_SERVERS = {"pyrs", "pyrs-404", "nginx"}
# Only pyrs and nginx serve files; the Python peers are not asked to.
STATIC_SCENARIOS = {"static-4k", "static-64m"}
WS_SCENARIOS = {"ws-echo"}
# The servers with a WebSocket echo at /ws.
WS_SERVERS = {"pyrs", "pyrs-asgi", "uvicorn", "granian-asgi", "socketify"}

# ---------------------------------------------------------------- servers


class Server:
    """How to start one server; `cmd(port, workers)` -> argv (before taskset)."""

    def __init__(self, key, name, group, cmd, interface, engine=False, reference=False,
                 scenarios=None, env=None, multi="workers", tls=False, framework=None):
        self.key, self.name, self.group, self.cmd = key, name, group, cmd
        # Runs a framework's app (flask, fastapi): that framework's scenario, and only it.
        # The framework is installed into bench/.venv as its own group.
        self.framework = framework
        self.groups = (group, framework) if framework else (group,)
        self.interface, self.engine, self.reference = interface, engine, reference
        self.scenarios = scenarios  # None = all
        self.env = env or {}
        self.multi = multi  # how the unpinned mode uses several cores
        self.tls = tls  # serves HTTPS: runs the TLS scenarios, and only those

    def runs(self, sc):
        if sc.framework or self.framework:
            return sc.framework == self.framework
        if sc.tls != self.tls:
            return False
        if sc.unpinned:
            return self.key in UNPINNED_SERVERS and (not self.engine
                                                     or sc.key in ENGINE_SCENARIOS)
        if self.tls:
            # Only pyrs and nginx serve files, over HTTPS too.
            return sc.static is None or self.key in ("pyrs-tls", "nginx-tls")
        if sc.key in WS_SCENARIOS:
            return self.key in WS_SERVERS
        if self.engine:
            return sc.key in ENGINE_SCENARIOS
        if sc.key in STATIC_SCENARIOS:
            return self.key in ("pyrs", "nginx")
        return self.scenarios is None or sc.key in self.scenarios


def granian(interface, target, flush=False):
    def cmd(port, workers):
        # WebSockets on only for ASGI: its ws-echo cell.
        ws = [] if interface == "asgi" else ["--no-ws"]
        c = [os.path.join(VENV, "bin", "granian"), "--interface", interface,
             "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
             "--runtime-threads", "1", "--http", "1", *ws, "--loop", "uvloop",
             "--no-access-log", "--log-level", "warning", "--backlog", "2048"]
        if flush:
            c.append("--http1-pipeline-flush")
        return c + [target]
    return cmd


def pyrs_cmd(port, workers, binary=PYRS_BIN, project="project.pyrs"):
    return [binary, "-a", "127.0.0.1", "-p", str(port), "-t", str(workers),
            os.path.join(APPS, "pyrs", project)]


# pyrs-log's access log (bench/apps/pyrs/project-log.pyrs; git-ignored), emptied at
# each start: the cost of one line per request written to a file.
ACCESS_LOG = os.path.join(APPS, "pyrs", "access.log")


def pyrs_log_cmd(port, workers):
    with open(ACCESS_LOG, "w"):
        pass
    return pyrs_cmd(port, workers, project="project-log.pyrs")


def uvicorn_cmd(port, workers, target="asgi_app:app"):
    return [os.path.join(VENV, "bin", "uvicorn"), target, "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--loop", "uvloop",
            "--http", "httptools", "--lifespan", "off", "--no-access-log",
            "--log-level", "warning", "--backlog", "2048"]


def gunicorn_cmd(port, workers, target="wsgi_app:app"):
    # gthread: the worker class that keeps connections alive (sync closes each one).
    return [os.path.join(VENV, "bin", "gunicorn"), target, "--bind",
            f"127.0.0.1:{port}", "--workers", str(workers), "--worker-class", "gthread",
            "--threads", "1", "--keep-alive", "300", "--backlog", "2048",
            "--log-level", "warning"]


def pyrs_app_cmd(target):
    """`pyrs module:attr` from the peers' folder (the interface found by itself)."""
    def cmd(port, workers):
        return [PYRS_BIN, target, "--app-dir", PEERS_DIR, "-a", "127.0.0.1", "-p", str(port),
                "-t", str(workers)]
    return cmd


def script_cmd(script, extra=()):
    def cmd(port, workers):
        return [VENV_PY, os.path.join(PEERS_DIR, script)] + list(extra(workers) if extra else [])
    return cmd


def nginx_cmd(port, workers, prefix, tls=False):
    conf = os.path.join(prefix, "nginx.conf")
    ssl = NGINX_SSL.format(cert=TLS_CERT, key=TLS_KEY) if tls else ""
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(prefix=prefix, port=port, workers=workers,
                                  echo_module=ECHO_MODULE, static=STATIC_DIR,
                                  ssl=" ssl" if tls else "", ssl_conf=ssl))
    return [shutil.which("nginx") or "/usr/sbin/nginx", "-p", prefix, "-c", conf,
            "-e", os.path.join(prefix, "error.log")]


ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
NGINX_CONF = """\
load_module {echo_module};
worker_processes {workers};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    sendfile on;
    server {{
        listen 127.0.0.1:{port}{ssl} backlog=2048;
{ssl_conf}        location = / {{ default_type text/plain; return 200 "Hello, World!"; }}
        location = /echo {{
            client_body_buffer_size 128k;
            client_max_body_size 1m;
            echo_read_request_body;
            echo_request_body;
        }}
        location /static/ {{ alias {static}/; }}
    }}
}}
"""
# nginx's TLS as a production site sets it: both versions, tickets and a session cache.
NGINX_SSL = """\
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets on;
"""

SERVERS = [
    Server("pyrs", "pyrs", "pyrs", pyrs_cmd, "pyrs handlers (examples/hello style)",
           multi="-t (reactor threads)"),
    Server("pyrs-log", "pyrs + access log to a file", "pyrs", pyrs_log_cmd,
           "the same handlers, `\"access_log\": \"access.log\"` (Combined + duration)",
           scenarios=["keepalive", "pipelined-16", "pipelined-64", "conn-1000", "post-100"],
           multi="-t (reactor threads)"),
    Server("pyrs-wheel", "pyrs (pip package)", "pyrs-wheel",
           lambda p, w: pyrs_cmd(p, w, PYRS_WHEEL_BIN),
           "the same handlers, `pyrs` from `pip install .` in bench/.venv",
           multi="-t (reactor threads)"),
    Server("pyrs-wsgi", "pyrs WSGI", "pyrs",
           lambda p, w: [PYRS_BIN, "wsgi_app:app", "--app-dir", PEERS_DIR, "-a", "127.0.0.1",
                         "-p", str(p), "-t", str(w)],
           "WSGI: the peers' wsgi_app.py, `pyrs wsgi_app:app`", multi="-t (reactor threads)"),
    Server("pyrs-asgi", "pyrs ASGI", "pyrs",
           lambda p, w: [PYRS_BIN, "asgi_app:app", "--app-dir", PEERS_DIR, "-a", "127.0.0.1",
                         "-p", str(p), "-t", str(w)],
           "raw ASGI: the peers' asgi_app.py, `pyrs asgi_app:app`", multi="-t (reactor threads)"),
    Server("pyrs-404", "pyrs no-Python 404 (engine ceiling)", "pyrs",
           lambda p, w: pyrs_cmd(p, w), "GET /nope: answered by the reactor", engine=True,
           multi="-t (reactor threads)"),
    Server("granian-rsgi", "granian RSGI", "granian", granian("rsgi", "rsgi_app:app"), "RSGI"),
    Server("granian-rsgi-flush", "granian RSGI + pipeline flush", "granian",
           granian("rsgi", "rsgi_app:app", flush=True), "RSGI, --http1-pipeline-flush"),
    Server("granian-asgi", "granian ASGI", "granian", granian("asgi", "asgi_app:app"), "ASGI"),
    Server("granian-wsgi", "granian WSGI", "granian", granian("wsgi", "wsgi_app:app"), "WSGI"),
    Server("uvicorn", "uvicorn (httptools+uvloop)", "uvicorn", uvicorn_cmd, "raw ASGI app"),
    Server("socketify", "socketify", "socketify", script_cmd("socketify_server.py"),
           "native App", multi="fork (SO_REUSEPORT)"),
    Server("socketify-asgi", "socketify ASGI", "socketify", script_cmd("socketify_asgi.py"),
           "raw ASGI app", multi="run(workers)"),
    Server("socketify-wsgi", "socketify WSGI", "socketify", script_cmd("socketify_wsgi.py"),
           "WSGI", multi="run(workers)"),
    Server("gunicorn", "gunicorn (gthread)", "gunicorn", gunicorn_cmd, "WSGI"),
    Server("robyn", "robyn", "robyn",
           script_cmd("robyn_server.py", lambda w: ["--processes", str(w), "--workers", "1",
                                                   "--log-level", "WARN", "--disable-openapi"]),
           "sync handlers", multi="--processes"),
    Server("bjoern", "bjoern", "bjoern", script_cmd("bjoern_server.py"), "WSGI",
           multi="fork after listen"),
    Server("meinheld", "meinheld", "meinheld", script_cmd("meinheld_server.py"), "WSGI",
           multi="fork after listen"),
    Server("nginx", "nginx (static, no Python)", "nginx", None, "`return 200`, echo module",
           reference=True, scenarios={s.key for s in SCENARIOS} - {"json"},
           multi="worker_processes"),
    # The framework scenarios: one app file per framework, every server that runs it.
    Server("pyrs-flask", "pyrs WSGI + Flask", "pyrs", pyrs_app_cmd("flask_app:app"),
           "Flask: `pyrs flask_app:app`", framework="flask", multi="-t (reactor threads)"),
    Server("granian-flask", "granian WSGI + Flask", "granian",
           granian("wsgi", "flask_app:app"), "Flask", framework="flask"),
    Server("gunicorn-flask", "gunicorn (gthread) + Flask", "gunicorn",
           lambda p, w: gunicorn_cmd(p, w, "flask_app:app"), "Flask", framework="flask"),
    Server("socketify-flask", "socketify WSGI + Flask", "socketify",
           script_cmd("socketify_wsgi.py"), "Flask", env={"BENCH_APP": "flask_app:app"},
           framework="flask", multi="run(workers)"),
    Server("pyrs-fastapi", "pyrs ASGI + FastAPI", "pyrs", pyrs_app_cmd("fastapi_app:app"),
           "FastAPI: `pyrs fastapi_app:app`", framework="fastapi",
           multi="-t (reactor threads)"),
    Server("granian-fastapi", "granian ASGI + FastAPI", "granian",
           granian("asgi", "fastapi_app:app"), "FastAPI", framework="fastapi"),
    Server("uvicorn-fastapi", "uvicorn (httptools+uvloop) + FastAPI", "uvicorn",
           lambda p, w: uvicorn_cmd(p, w, "fastapi_app:app"), "FastAPI", framework="fastapi"),
    Server("socketify-fastapi", "socketify ASGI + FastAPI", "socketify",
           script_cmd("socketify_asgi.py"), "FastAPI", env={"BENCH_APP": "fastapi_app:app"},
           framework="fastapi", multi="run(workers)"),
    Server("pyrs-tls", "pyrs HTTPS", "pyrs",
           lambda p, w: pyrs_cmd(p, w) + ["--tls-cert", TLS_CERT, "--tls-key", TLS_KEY],
           "the pyrs handlers over rustls (`--tls-cert`, `--tls-key`)", tls=True,
           multi="-t (reactor threads)"),
    Server("granian-tls", "granian RSGI HTTPS", "granian",
           lambda p, w: granian("rsgi", "rsgi_app:app")(p, w)[:-1]
           + ["--ssl-certificate", TLS_CERT, "--ssl-keyfile", TLS_KEY, "rsgi_app:app"],
           "RSGI over TLS (`--ssl-certificate`, `--ssl-keyfile`), the same certificate",
           tls=True),
    Server("uvicorn-tls", "uvicorn HTTPS (httptools+uvloop)", "uvicorn",
           lambda p, w: uvicorn_cmd(p, w) + ["--ssl-certfile", TLS_CERT, "--ssl-keyfile", TLS_KEY],
           "raw ASGI over TLS (`--ssl-certfile`, `--ssl-keyfile`), the same certificate",
           tls=True),
    Server("nginx-tls", "nginx HTTPS (static, no Python)", "nginx", None,
           "`return 200`, echo module, `listen ... ssl`", reference=True, tls=True,
           multi="worker_processes"),
]

# ---------------------------------------------------------------- processes & CPU


def proc_children():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid):
    kids, out, todo = proc_children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_ticks(pids):
    """utime+stime (all threads) summed over pids, in clock ticks."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return total


def machine_busy(seconds=1.0):
    """Fraction of all CPUs busy over `seconds`, from /proc/stat."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]
        return sum(v), idle
    t0, i0 = snap()
    time.sleep(seconds)
    t1, i1 = snap()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Running:
    def __init__(self, server, args, tmp, unpinned=False):
        self.server, self.args, self.tmp = server, args, tmp
        # Pinned (one worker, taskset) unless the run or the scenario is unpinned.
        self.pinned = args.pinned and not unpinned
        self.port = free_port()
        self.proc = None
        self.pids = []
        self.logpath = os.path.join(tmp, f"{server.key}.log")
        self.argv = None

    def start(self):
        workers = 1 if self.pinned else (os.cpu_count() or 2)
        s = self.server
        if s.key in ("nginx", "nginx-tls"):
            prefix = os.path.join(self.tmp, s.key)
            os.makedirs(prefix, exist_ok=True)
            argv = nginx_cmd(self.port, workers, prefix, tls=s.tls)
        else:
            argv = s.cmd(self.port, workers)
        if self.pinned:
            argv = ["taskset", "-c", str(self.args.server_core)] + argv
        elif self.args.pinned:
            # The harness keeps itself on wrk's core; an unpinned cell must not inherit that.
            argv = ["taskset", "-c", ALL_CORES] + argv
        self.argv = argv
        env = dict(os.environ, BENCH_HOST="127.0.0.1", BENCH_PORT=str(self.port),
                   BENCH_WORKERS=str(workers), PYTHONPATH=PEERS_DIR, PYTHONUNBUFFERED="1",
                   **s.env)
        env.pop("VIRTUAL_ENV", None)
        if s.framework and s.group == "pyrs":
            # pyrs's embedded Python finds the framework in bench/.venv.
            env["VIRTUAL_ENV"] = VENV
        logf = open(self.logpath, "w")
        self.proc = subprocess.Popen(argv, cwd=PEERS_DIR, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        logf.close()
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as c:
                    c.settimeout(2)
                    if s.tls:
                        # A TLS server may not answer plain HTTP at all (uvicorn).
                        ctx = ssl.create_default_context()
                        ctx.check_hostname = False
                        ctx.verify_mode = ssl.CERT_NONE
                        c = ctx.wrap_socket(c, server_hostname="localhost")
                    c.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    if c.recv(1):
                        break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"not answering after 30 s: {self.log_tail()}")
        time.sleep(0.3)  # let multi-process servers finish spawning
        self.pids = tree(self.proc.pid)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def cpu(self):
        self.pids = sorted(set(self.pids) | set(tree(self.proc.pid))) if self.alive() else self.pids
        return cpu_ticks(self.pids)

    def log_tail(self, n=3):
        try:
            with open(self.logpath, errors="replace") as f:
                lines = [ln.strip() for ln in f if ln.strip()]
            return " | ".join(lines[-n:])[:300] or "(no output)"
        except OSError:
            return "(no log)"

    def stop(self):
        if self.proc is None:
            return
        pids = set(self.pids) | (set(tree(self.proc.pid)) if self.alive() else set())
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        time.sleep(0.2)
        for p in pids:  # children that left the process group
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None

# ---------------------------------------------------------------- correctness


class Reader:
    """Reads HTTP/1.1 responses from a socket, in order."""

    def __init__(self, sock):
        # A bytearray: over TLS each recv is one 16 KiB record, and `bytes +=` would
        # copy a 64 MiB body thousands of times.
        self.sock, self.buf = sock, bytearray()

    def _fill(self):
        d = self.sock.recv(262144)
        if not d:
            raise ConnectionError("connection closed by the server")
        self.buf += d

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1])
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._take(size)
                self._take(2)
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:  # no framing: the body runs to the end of the connection
            try:
                while True:
                    self._fill()
            except ConnectionError:
                pass
            body, self.buf = self.buf, bytearray()
        return status, headers, body


def connect(port, tls=False):
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        import ssl
        ctx = ssl.create_default_context(cafile=TLS_CERT)
        ctx.set_alpn_protocols(["http/1.1"])
        s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
    return s


def ws_check(port, sc):
    """The ws-echo scenario's correctness: a handshake with the right
    Sec-WebSocket-Accept, then a text, a binary and a 70 KiB message echoed."""
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    with connect(port) as s:
        s.sendall(b"GET " + sc.path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                  b"Sec-WebSocket-Key: " + key + b"\r\n\r\n")
        r = Reader(s)
        status = int(r._line().split(b" ")[1])
        headers = {}
        while True:
            line = r._line()
            if not line:
                break
            name, _, value = bytes(line).partition(b":")
            headers[name.strip().lower()] = value.strip()
        if status != 101:
            return f"handshake: status {status}, want 101"
        if headers.get(b"sec-websocket-accept") != accept:
            return "handshake: wrong Sec-WebSocket-Accept"
        for opcode, payload in ((1, b"hello"), (2, bytes(range(256))), (1, b"x" * 70000)):
            mask = os.urandom(4)
            n = len(payload)
            head = bytes([0x80 | opcode])
            if n < 126:
                head += bytes([0x80 | n])
            elif n < 65536:
                head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
            else:
                head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
            s.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            h = r._take(2)
            n = h[1] & 0x7f
            if n == 126:
                n = int.from_bytes(r._take(2), "big")
            elif n == 127:
                n = int.from_bytes(r._take(8), "big")
            got = r._take(n)
            if (h[0] & 0x0f, got) != (opcode, payload):
                return f"echo of a {n}-byte {'text' if opcode == 1 else 'binary'} message differs"
    return None


def check(port, sc, engine):
    """Correctness of one (server, scenario): (None, False) if right, else (the first
    failure, fatal). Fatal: the plain request itself is answered wrong, so no run is made."""
    if sc.ws:
        try:
            err = ws_check(port, sc)
        except (OSError, ValueError, ConnectionError, IndexError) as e:
            err = f"{type(e).__name__}: {e}"
        return (None, False) if err is None else (err, True)
    host = f"127.0.0.1:{port}"
    path = "/nope" if engine else sc.path
    req = sc.request(host, path)
    try:
        with connect(port, sc.tls) as s:
            s.sendall(req)
            err = sc.expect(*Reader(s).response(), engine=engine)
    except (OSError, ValueError, ConnectionError) as e:
        err = f"{type(e).__name__}: {e}"
    if err:
        return "single request: " + err, True
    try:
        err = _check_more(port, sc, engine, host, req)
    except (OSError, ValueError, ConnectionError) as e:
        err = f"{type(e).__name__}: {e}"
    return err, False


def _check_more(port, sc, engine, host, req):
    # 2. pipelined: N copies in one write, N answers in order
    big = len(sc.body) > 8192 or (sc.static and STATIC_FILES[sc.static] > 8192)
    n = sc.depth if sc.depth > 1 else (2 if sc.static and big else 4 if big else 16)
    with connect(port, sc.tls) as s:
        s.sendall(req * n)
        r = Reader(s)
        for i in range(n):
            err = sc.expect(*r.response(), engine=engine)
            if err:
                return f"pipelined x{n}, response {i + 1}: {err}"
    # 3. order: alternate distinguishable requests in one write
    with connect(port, sc.tls) as s:
        reqs, wants = [], []
        for i in range(16):
            if engine:
                p = "/nope" if i % 2 else "/"
                reqs.append(f"GET {p} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                wants.append((404, None) if i % 2 else (200, HELLO))
            elif i % 2:
                b = f"order-{i}".encode()
                reqs.append(f"POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                            f"application/octet-stream\r\nContent-Length: {len(b)}\r\n\r\n"
                            .encode() + b)
                wants.append((200, b))
            else:
                reqs.append(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                wants.append((200, HELLO))
        s.sendall(b"".join(reqs))
        r = Reader(s)
        for i, (ws, wb) in enumerate(wants):
            st, _, body = r.response()
            if st != ws or (wb is not None and body != wb):
                return (f"pipelined order, response {i + 1}: status {st} body {body[:30]!r},"
                        f" want {ws} {wb!r}")
    # 4. the request line cut across two TCP writes, 50 ms apart
    with connect(port, sc.tls) as s:
        cut = req.index(b" HTTP/1.1") + 4
        s.sendall(req[:cut])
        time.sleep(0.05)
        s.sendall(req[cut:])
        err = sc.expect(*Reader(s).response(), engine=engine)
        if err:
            return "request line split across two writes: " + err
    return None

# ---------------------------------------------------------------- wrk

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}


def to_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", s)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def wrk_cmd(args, sc, port, engine, duration):
    if sc.ws:
        c = [WSLOAD, "-c", str(sc.conns), "-d", f"{duration}s", f"ws://127.0.0.1:{port}{sc.path}"]
        return ["taskset", "-c", str(args.wrk_core)] + c if args.pinned else c
    pinned = args.pinned and not sc.unpinned
    scheme = "https" if sc.tls else "http"
    url = f"{scheme}://127.0.0.1:{port}{'/nope' if engine else sc.path}"
    threads = 1 if pinned else (os.cpu_count() or 1)
    c = ["wrk", "-t", str(threads), "-c", str(sc.conns), "-d", f"{duration}s",
         "--latency"]
    if sc.script_args:
        script, sargs = sc.script_args
        c += ["-s", os.path.join(BENCH, script), url, "--"] + sargs
    else:
        c += [url]
    if pinned:
        c = ["taskset", "-c", str(args.wrk_core)] + c
    elif args.pinned:
        c = ["taskset", "-c", ALL_CORES] + c
    return c


def run_wrk(cmd):
    """Run wrk; returns (parsed dict, wrk CPU seconds)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    r = {"raw": out, "rc": p.returncode, "wall": wall, "non2xx": 0, "sockerr": 0,
         "sockerr_text": ""}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    r["requests"] = int(m.group(1)) if m else 0
    r["secs"] = to_ms(m.group(2) + m.group(3)) / 1e3 if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        v = to_ms(m.group(1)) if m else None
        # wrk's coordinated-omission correction breaks its percentiles when one latency
        # sample stands for a whole pipelined batch: it then prints 0.00us. Not a figure.
        r[f"p{pct}"] = v if v else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["sockerr"] = sum(int(x) for x in m.groups())
        r["sockerr_text"] = m.group(0)
    r["wrk_cpu"] = ru.ru_utime + ru.ru_stime
    return r

# ---------------------------------------------------------------- measuring


def measure(args, run, sc):
    """One cell: correctness checks, `args.runs` wrk runs, checks again. A cell that
    fails anything is flagged (not ranked); its figures are still shown when it ran."""
    engine = run.server.engine
    res = {"server": run.server.key, "scenario": sc.key, "ok": False, "measured": False,
           "reason": None}
    flags = []
    err, fatal = check(run.port, sc, engine)
    if err:
        flags.append("incorrect: " + err)
        if fatal:
            res["reason"] = flags[0]
            return res
    cmd = wrk_cmd(args, sc, run.port, engine, args.duration)
    res["cmd"] = cmd
    if args.warmup and run.alive():
        run_wrk(wrk_cmd(args, sc, run.port, engine, args.warmup))
    runs = []
    for i in range(args.runs):
        if not run.alive():
            break
        c0 = run.cpu()
        r = run_wrk(cmd)
        c1 = run.cpu()
        r["server_cpu"] = (c1 - c0) / CLK_TCK
        if r["requests"] == 0 or r["rc"] != 0:
            flags.append(f"run {i + 1}: wrk got no responses (rc {r['rc']}): "
                         + " ".join(r["raw"].split())[-160:])
            break
        if r["sockerr"]:
            flags.append(f"run {i + 1}: {r['sockerr_text']}")
        if engine:
            if r["non2xx"] != r["requests"]:
                flags.append(f"run {i + 1}: {r['requests'] - r['non2xx']} responses not 404")
        elif r["non2xx"]:
            flags.append(f"run {i + 1}: {r['non2xx']} non-2xx responses")
        r["us_per_req"] = r["server_cpu"] * 1e6 / r["requests"]
        runs.append(r)
    if not run.alive():
        flags.append(f"server died ({run.log_tail(2)})")
    else:
        err, _ = check(run.port, sc, engine)  # still right after the load?
        if err and not flags:
            flags.append("incorrect after load: " + err)
    if runs:
        def med(k):
            vals = [x[k] for x in runs]
            return statistics.median(vals) if all(v is not None for v in vals) else None
        res.update(measured=True, rps=med("rps"), p50=med("p50"), p99=med("p99"),
                   us_per_req=med("us_per_req"),
                   server_pct=statistics.median(100 * x["server_cpu"] / x["secs"] for x in runs),
                   wrk_pct=statistics.median(100 * x["wrk_cpu"] / x["wall"] for x in runs),
                   all_rps=[round(x["rps"]) for x in runs])
    res["ok"] = bool(runs) and not flags
    if flags:
        res["reason"] = flags[0] + (f" (+{len(flags) - 1} more)" if len(flags) > 1 else "")
    return res

# ---------------------------------------------------------------- report


def fmt_rps(v):
    if v is None:
        return "–"
    if v < 1e3:  # the 64 MiB file: tens per second
        return f"{v:.1f}"
    return f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.1f} k"


def fmt_ms(v):
    if v is None:
        return "–"
    return f"{v * 1000:.0f} µs" if v < 1 else f"{v:.2f} ms"


def fmt_ratio(a, b, higher_better=True):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def sh(cmd):
    return " ".join(shlex.quote(str(c)) for c in cmd)


def placeholder(cmd, port, tmp=None):
    out = sh(cmd).replace(str(port), "PORT").replace(ROOT + "/", "")
    return out.replace(tmp, "$TMP") if tmp else out


def tool_version(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except Exception as e:
        return f"? ({e})"


def report(args, results, meta):
    L = []
    L.append(START_MARK)
    L.append("## bench/run: pyrs against Python HTTP servers")
    L.append("")
    L.append(f"Generated by `{meta['invocation']}` on {meta['date']} in {meta['elapsed']}.")
    if meta["noisy"]:
        L.append("")
        L.append(f"**Noisy run:** {meta['noisy']} Figures are for checking the harness, "
                 "not for publication.")
    L.append("")
    L.append("| | |")
    L.append("|---|---|")
    for k, v in meta["facts"]:
        L.append(f"| {k} | {v} |")
    L.append("")
    L.append("Each cell: the correctness checks (body right; the request repeated pipelined "
             "in one write and answered in order; GET / and POST /echo alternated in one "
             "write, answered in order; the request line cut across two TCP writes 50 ms "
             "apart), then "
             f"{args.runs} wrk runs of {args.duration} s; figures are the medians of the "
             "runs, the checks run again after the load. A cell with a wrong answer, a "
             "socket error or a non-2xx response is **flagged** and not ranked. "
             "µs CPU/req = server CPU time (utime+stime of all its processes and threads, "
             "from /proc) ÷ responses; server and wrk CPU are % of one core.")
    L.append("")
    L.append("### Servers")
    L.append("")
    L.append("Each server runs with cwd and `PYTHONPATH` = `bench/apps/peers`, and "
             "`BENCH_HOST`, `BENCH_PORT`, `BENCH_WORKERS` in its environment (the peer "
             "scripts read them). WORKERS is 1 when pinned, nproc when unpinned.")
    L.append("")
    L.append("| server | interface | version | command |")
    L.append("|---|---|---|---|")
    for s in meta["servers"]:
        L.append(f"| {s['name']} | {s['interface']} | {s['version']} | {s['cmd']} |")
    L.append("")
    L.append("### Scenarios")
    L.append("")
    L.append("| scenario | what | wrk command |")
    L.append("|---|---|---|")
    for sc in meta["scenarios"]:
        L.append(f"| {sc.key} | {sc.what} | `{meta['wrk_cmds'].get(sc.key, '–')}` |")
    by = {(r["server"], r["scenario"]): r for r in results}
    servers = [s for s in SERVERS if s.key in meta["server_keys"]]
    for sc in meta["scenarios"]:
        L.append("")
        L.append(f"### {sc.title}")
        L.append("")
        L.append("| server | req/s | p50 | p99 | µs CPU/req | server CPU | wrk CPU | status |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---|")
        rows = []
        for s in servers:
            if not s.runs(sc):
                continue
            r = by.get((s.key, sc.key))
            if r is None:
                continue
            rows.append((s, r))
        rows.sort(key=lambda sr: (0 if sr[1]["ok"] else 1 if sr[1]["measured"] else 2,
                                  -(sr[1].get("rps") or 0)))
        for s, r in rows:
            name = f"**{s.name}**" if s.key == pyrs_key(sc) else s.name
            if r["ok"]:
                status = "ok (404s expected)" if s.engine else "ok"
            else:
                status = "**flagged**: " + r["reason"].replace("|", "/").replace("\n", " ")
            if r["measured"]:
                L.append(f"| {name} | {fmt_rps(r['rps'])} | {fmt_ms(r['p50'])} | "
                         f"{fmt_ms(r['p99'])} | {r['us_per_req']:.2f} | "
                         f"{r['server_pct']:.0f} % | {r['wrk_pct']:.0f} % | {status} |")
            else:
                L.append(f"| {name} | – | – | – | – | – | – | {status} |")
        if sc.static:
            size = STATIC_FILES[sc.static]
            rates = [f"{s.name} {r['rps'] * size / 1e9:.2f} GB/s" for s, r in rows
                     if r["measured"] and r.get("rps")]
            if rates:
                L.append("")
                L.append(f"Bytes served ({size} B per response): " + ", ".join(rates) + ".")
    # summary
    L.append("")
    L.append("### pyrs against the best peer")
    L.append("")
    L.append("Best peer = the best Python peer in that column (nginx and pyrs's 404 path "
             "excluded). req/s: above 1× is pyrs faster; p50, p99 and µs CPU/req: below 1× "
             "is pyrs better.")
    L.append("")
    L.append("| scenario | pyrs req/s | best peer req/s | ratio | pyrs µs CPU/req | best peer "
             "µs CPU/req | ratio | p50 ratio | p99 ratio | pyrs ÷ nginx req/s | "
             "engine ceiling req/s | fastest flagged peer (not ranked) |")
    L.append("|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---|")
    for sc in meta["scenarios"]:
        # Over HTTPS: pyrs-tls against granian's and uvicorn's TLS, and nginx-tls.
        p = by.get((pyrs_key(sc), sc.key))
        peers = [by[(s.key, sc.key)] for s in servers if not s.engine and not s.reference
                 and not s.key.startswith("pyrs") and (s.key, sc.key) in by
                 and by[(s.key, sc.key)]["ok"]]
        names = {s.key: s.name for s in SERVERS}
        ng = by.get(("nginx-tls" if sc.tls else "nginx", sc.key))
        eng = by.get(("pyrs-404", sc.key))
        eng_s = fmt_rps(eng["rps"]) if eng and eng["ok"] else "–"
        flagged = [by[(s.key, sc.key)] for s in servers if not s.engine and not s.reference
                   and not s.key.startswith("pyrs") and (s.key, sc.key) in by
                   and not by[(s.key, sc.key)]["ok"] and by[(s.key, sc.key)]["measured"]]
        fl = max(flagged, key=lambda x: x["rps"] or 0) if flagged else None
        fl_s = f"{fmt_rps(fl['rps'])} {names[fl['server']]}" if fl else "–"
        if not p:
            continue
        if not p["ok"]:
            L.append(f"| {sc.key} | flagged | | | | | | | | | {eng_s} | {fl_s} |")
            continue

        def best(key, low):
            c = [x for x in peers if x.get(key) is not None]
            if not c:
                return None
            return (min if low else max)(c, key=lambda x: x[key])
        br, bc, b50, b99 = best("rps", False), best("us_per_req", True), best("p50", True), \
            best("p99", True)
        br_s = f"{fmt_rps(br['rps'])} {names[br['server']]}" if br else "–"
        bc_s = f"{bc['us_per_req']:.2f} {names[bc['server']]}" if bc else "–"
        cells = [sc.key, fmt_rps(p["rps"]), br_s,
                 fmt_ratio(p["rps"], br["rps"]) if br else "–",
                 f"{p['us_per_req']:.2f}", bc_s,
                 fmt_ratio(p["us_per_req"], bc["us_per_req"]) if bc else "–",
                 fmt_ratio(p["p50"], b50["p50"]) if b50 else "–",
                 fmt_ratio(p["p99"], b99["p99"]) if b99 else "–",
                 fmt_ratio(p["rps"], ng["rps"]) if ng and ng["ok"] else "–", eng_s, fl_s]
        L.append("| " + " | ".join(cells) + " |")
    L.append("")
    L.append(END_MARK)
    return "\n".join(L) + "\n"


def pyrs_key(sc):
    """The pyrs server a scenario's summary row is about."""
    if sc.framework:
        return f"pyrs-{sc.framework}"
    return "pyrs-tls" if sc.tls else "pyrs"


def write_results(path, section, start=START_MARK, end=END_MARK, heading=None):
    """Replaces the part of `path` between the `start` and `end` markers (and the
    `heading` line just before it, when given) with `section`, or appends
    `section`; the rest of the file is kept. Shared with bench/soak."""
    old = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
    if start in old and end in old:
        a = old.index(start)
        if heading:
            h = old.rfind(heading, 0, a)
            a = h if h >= 0 else a
        b = old.index(end) + len(end)
        new = old[:a] + section.rstrip("\n") + old[b:]
    elif old:
        new = old.rstrip("\n") + "\n\n" + section
    else:
        new = "# Benchmark results\n\n" + section
    if not new.endswith("\n"):
        new += "\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(new)
    os.replace(tmp, path)

# ---------------------------------------------------------------- main


def pick(items, spec, key):
    if not spec:
        return items
    want = [w.strip() for w in spec.split(",") if w.strip()]
    keys = {key(i) for i in items}
    # A full name selects that one item (pyrs, not every pyrs-*); others are prefixes.
    return [i for i in items
            if any(key(i) == w or (w not in keys and key(i).startswith(w)) for w in want)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--long", action="store_true", help="publication mode: 10 s runs, 3 s warm-up")
    ap.add_argument("--unpinned", action="store_true",
                    help="no taskset; servers use all cores (workers = nproc), wrk -t nproc")
    ap.add_argument("--only", help="servers, comma-separated (a full name is that server; "
                    "other prefixes work: granian, pyrs-w)")
    ap.add_argument("--scenarios", help="scenarios, comma-separated (prefixes work: post, pipelined)")
    ap.add_argument("--duration", type=int, help="seconds per wrk run (default 1, --long 10)")
    ap.add_argument("--runs", type=int, default=3, help="wrk runs per cell, median taken (3)")
    ap.add_argument("--output", default=RESULTS, help="markdown file to update (bench/RESULTS.md)")
    ap.add_argument("--no-write", action="store_true", help="print the tables only")
    ap.add_argument("--skip-install", action="store_true", help="use bench/.venv as it is")
    ap.add_argument("--list", action="store_true", help="list servers and scenarios")
    args = ap.parse_args()
    if args.list:
        for s in SERVERS:
            print(f"server   {s.key:20} {s.name}")
        for sc in SCENARIOS:
            print(f"scenario {sc.key:20} {sc.title}")
        return 0

    t_start = time.monotonic()
    ncpu = os.cpu_count() or 1
    args.pinned = not args.unpinned and ncpu >= 2
    if not args.unpinned and ncpu < 2:
        log("only one CPU: running unpinned")
    args.duration = args.duration or (10 if args.long else 1)
    args.warmup = 3 if args.long else 0
    args.server_core, args.wrk_core = 1, 0
    if args.pinned:
        os.sched_setaffinity(0, {args.wrk_core})  # keep this harness off the server's core
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass

    servers = pick(SERVERS, args.only, lambda s: s.key)
    scenarios = pick(SCENARIOS, args.scenarios, lambda s: s.key)
    if not args.pinned:
        # Everything runs unpinned already: the *-unpinned cells would repeat others.
        scenarios = [sc for sc in scenarios if not sc.unpinned]
    prepare_static()  # pyrs's bench project mounts the folder, whatever is measured
    prepare_tls()
    if not servers or not scenarios:
        log("nothing selected; see --list")
        return 2

    # availability
    unavailable = {}
    # Only what the selected scenarios need is installed.
    groups = sorted({g for s in servers if any(s.runs(sc) for sc in scenarios)
                     for g in s.groups} - {"pyrs", "nginx"})
    if groups:
        if args.skip_install:
            st = {g: None for g in groups}
        else:
            st = install_peers(groups)
        for g, why in st.items():
            if why:
                unavailable[g] = why
                log(f"[install] {g}: unavailable: {why}")
    if not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"):
        unavailable["nginx"] = "nginx not installed (apt-get install nginx-light)"
    elif not os.path.exists(ECHO_MODULE):
        unavailable["nginx"] = f"nginx echo module missing ({ECHO_MODULE})"
    if os.environ.get("PYRS_BENCH_BUILD_FAILED"):
        unavailable["pyrs"] = "cargo build --release failed"
    elif not os.path.exists(PYRS_BIN):
        unavailable["pyrs"] = "target/release/pyrs missing (cargo build --release failed?)"

    # noise
    busy = machine_busy(1.0)
    fuzz = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if b"fuzz" in f.read():
                        fuzz += 1
            except OSError:
                pass
    noisy = []
    if busy > 0.10:
        noisy.append(f"the machine was {busy * 100:.0f} % busy before the run started")
    if fuzz:
        noisy.append(f"{fuzz} fuzzer process(es) were running")
    noisy_text = ("; ".join(noisy) + ".") if noisy else ""
    if noisy_text:
        log(f"[noise] {noisy_text}")

    versions = {}
    for g in sorted({g for s in servers for g in s.groups}):
        if g == "pyrs":
            versions[g] = tool_version([PYRS_BIN, "--version"]) if "pyrs" not in unavailable else "–"
        elif g == "pyrs-wheel":
            versions[g] = (tool_version([PYRS_WHEEL_BIN, "--version"])
                           if g not in unavailable else "–")
        elif g == "nginx":
            versions[g] = tool_version(["nginx", "-v"]).replace("nginx version: ", "")
        elif g not in unavailable:
            versions[g] = ", ".join(f"{k} {v}" for k, v in venv_versions(g).items())

    results, wrk_cmds, server_meta = [], {}, []
    tmp = tempfile.mkdtemp(prefix="pyrs-bench-")
    total_cells = sum(1 for s in servers for sc in scenarios if s.runs(sc))
    cell = 0
    try:
        for s in servers:
            cells = [sc for sc in scenarios if s.runs(sc)]
            if not cells:
                continue
            meta = {"name": s.name, "interface": s.interface,
                    "version": versions.get(s.group, "–"), "cmd": "–"}
            server_meta.append(meta)
            missing = [g for g in s.groups if g in unavailable]
            if missing:
                meta["version"] = "unavailable"
                for sc in cells:
                    cell += 1
                    results.append({"server": s.key, "scenario": sc.key, "ok": False,
                                    "measured": False,
                                    "reason": "unavailable: " + unavailable[missing[0]]})
                continue
            if s.framework:
                meta["version"] += f"; {versions.get(s.framework, '–')}"
            run = Running(s, args, tmp)
            for sc in cells:
                cell += 1
                if run.alive() and run.pinned != (args.pinned and not sc.unpinned):
                    run.stop()  # started for the other mode: start again
                    run.proc = None
                if not run.alive():
                    try:
                        if run.proc is not None:
                            run.stop()
                        run = Running(s, args, tmp, unpinned=sc.unpinned)
                        log(f"[{s.key}] starting")
                        run.start()
                        if meta["cmd"] == "–" or run.pinned == args.pinned:
                            meta["cmd"] = "`" + placeholder(run.argv, run.port, tmp) + "`"
                    except Exception as e:
                        why = f"failed to start: {e}"
                        log(f"[{s.key}] {why}")
                        results.append({"server": s.key, "scenario": sc.key, "ok": False,
                                        "measured": False, "reason": why})
                        run.stop()
                        run.proc = None
                        continue
                r = measure(args, run, sc)
                results.append(r)
                if "cmd" in r and sc.key not in wrk_cmds:
                    wrk_cmds[sc.key] = placeholder(r["cmd"], run.port).replace(
                        "/nope", sc.path)
                head = f"[{cell}/{total_cells}] {s.key:18} {sc.key:13}"
                if r["measured"]:
                    log(f"{head} {fmt_rps(r['rps']):>9} p50 {fmt_ms(r['p50']):>9} p99 "
                        f"{fmt_ms(r['p99']):>9} {r['us_per_req']:6.2f} µs/req  srv "
                        f"{r['server_pct']:3.0f}% wrk {r['wrk_pct']:3.0f}%  runs {r['all_rps']}")
                if not r["ok"]:
                    log(f"{head} FLAGGED: {r['reason']}")
            run.stop()
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    elapsed = time.monotonic() - t_start
    cpu_model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    cpu_model = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // (1024 * 1024)
    invocation = "bench/run" + "".join(" " + shlex.quote(a) for a in sys.argv[1:])
    facts = [
        ("date", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        ("machine", f"{ncpu} CPUs (`nproc`), {cpu_model}, {mem} GiB RAM"),
        ("kernel", platform.release()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()} "
                   f"(peers, bench/.venv); pyrs embeds: {versions.get('pyrs', '–')}; "
                   f"pyrs-wheel: {versions.get('pyrs-wheel', '–')}"),
        ("wrk", tool_version(["wrk", "-v"])),
        ("peer versions", "; ".join(f"{g}: {v}" for g, v in versions.items()
                                     if not g.startswith("pyrs")) or "–"),
        ("unavailable", "; ".join(f"{g}: {w}" for g, w in unavailable.items()) or "none"),
        ("mode", (f"pinned: server on core {args.server_core} (`taskset -c "
                  f"{args.server_core}`, 1 worker/reactor), wrk on core {args.wrk_core} "
                  f"(`-t 1`)") if args.pinned else
         f"unpinned: servers use {ncpu} workers/reactors where they can, wrk `-t {ncpu}`"),
        ("runs", f"{'long' if args.long else 'short'}: {args.runs} × {args.duration} s per "
                 f"cell, medians" + (f", {args.warmup} s warm-up" if args.warmup else "")),
        ("background load", f"{busy * 100:.0f} % of all CPUs busy just before the run"
                            + (f", {fuzz} fuzzer process(es)" if fuzz else "")),
    ]
    m, s_ = divmod(int(elapsed), 60)
    meta = {"invocation": invocation, "date": facts[0][1], "elapsed": f"{m} min {s_} s",
            "noisy": noisy_text, "facts": facts, "servers": server_meta,
            "scenarios": scenarios, "wrk_cmds": wrk_cmds,
            "server_keys": {s.key for s in servers}}
    section = report(args, results, meta)
    print(section)
    if not args.no_write:
        write_results(args.output, section)
        log(f"wrote {os.path.relpath(args.output)} ({m} min {s_} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
