#!/usr/bin/env python3
"""pyrs soak test: run by bench/soak (which builds the release binary first).

Starts target/release/pyrs on examples/api (port 0) and sends it --requests
requests (default 10 million) from several client processes, in a fixed mix:

  pipelined   batches of 32 or 128 GETs on long-lived keep-alive connections
              (/info, /items, /status?code=..., /bytes, HEAD /info, a 404 path)
  keep-alive  one request at a time on long-lived connections
  uploads     pipelined on a keep-alive connection: POST /items with a chunked
              JSON body (201), GET and DELETE of that item (200, 204), invalid
              JSON (400 from the handler, connection kept), POST /info with a
              64 KiB Content-Length body and a 192 KiB chunked body (200, the
              handler reports body_length, which is checked)
  new conn    one request per connection with `Connection: close`
  bad         malformed requests, each on a new connection: 400 and a close
              (some after a good request on the same connection)

Clients acknowledge at once (TCP_QUICKACK; see Conn._fill). Every response is checked (status, and the body where it is known) and every
request must be answered. The server's VmRSS is sampled before traffic, after a
warm-up (10 % of the requests), at 50 % and at the end; after warm-up it must
stay flat (growth under 5 %). Prints a summary, appends it to bench/RESULTS.md
as the "## Soak" section (replacing an earlier one), and exits non-zero when a
request went unanswered, a response was wrong, or memory grew.
Standard library only.
"""
import argparse
import datetime
import multiprocessing as mp
import os
import platform
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

from harness import write_results  # bench/ is on sys.path: this script lives there

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
PYRS_BIN = os.path.join(ROOT, "target", "release", "pyrs")
PROJECT = os.path.join(ROOT, "examples", "api", "project.pyrs")
RESULTS = os.path.join(BENCH, "RESULTS.md")
START_MARK = "<!-- bench/soak start -->"
END_MARK = "<!-- bench/soak end -->"

# Share of requests per scenario (by request count, not by invocation).
SHARES = {"pipelined": 0.86, "keepalive": 0.06, "uploads": 0.06, "newconn": 0.013, "bad": 0.007}
# Requests per invocation of each scenario, on average (pipelined: 7 of 8
# batches hold 32 requests, 1 of 8 holds 128; bad: a third have a good request
# first).
SIZES = {"pipelined": 44.0, "keepalive": 16.0, "uploads": 6.0, "newconn": 1.0, "bad": 4.0 / 3.0}
KEEPALIVE_RUN = 16
# Connections are replaced after this many batches (client-side close).
PIPELINED_CONN_BATCHES = 400
KEEPALIVE_CONN_RUNS = 50
UPLOAD_CONN_RUNS = 200
SOCKET_TIMEOUT = 30.0
# Workers report progress every this many requests.
REPORT_EVERY = 2000
WARM_UP_SHARE = 0.10
# VmRSS is averaged over these shares of the requests done: start (right after
# the warm-up), mid and end.
RSS_WINDOWS = {"start": (WARM_UP_SHARE, 0.20), "mid": (0.45, 0.55), "end": (0.90, 1.01)}
MAX_GROWTH = 0.05
ERROR_SAMPLES = 5

HOST = b"Host: soak\r\n"


class Unanswered(Exception):
    """The connection ended (EOF, reset, timeout) before a response was complete."""

    def __init__(self, kind):
        super().__init__(kind)
        self.kind = kind


def get(path, extra=b""):
    return b"GET " + path.encode() + b" HTTP/1.1\r\n" + HOST + extra + b"\r\n"


def head(path):
    return b"HEAD " + path.encode() + b" HTTP/1.1\r\n" + HOST + b"\r\n"


def post(path, body, ctype=b"application/octet-stream"):
    return (b"POST " + path.encode() + b" HTTP/1.1\r\n" + HOST + b"Content-Type: " + ctype
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def post_chunked(path, chunks, ctype=b"application/octet-stream"):
    out = [b"POST " + path.encode() + b" HTTP/1.1\r\n" + HOST + b"Content-Type: " + ctype
           + b"\r\nTransfer-Encoding: chunked\r\n\r\n"]
    for c in chunks:
        out.append(b"%x\r\n" % len(c) + c + b"\r\n")
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def delete(path):
    return b"DELETE " + path.encode() + b" HTTP/1.1\r\n" + HOST + b"\r\n"


# (name, request bytes, expected status, HEAD?, expected body or None)
STATUS_CODES = [200, 201, 202, 400, 404, 418, 500, 503]
GETS = [
    ("GET /info", get("/info?soak=1&x=2"), 200, False, None),
    ("GET /items", get("/items"), 200, False, None),
    ("GET /bytes", get("/bytes"), 200, False, b"\x00\x01\x02"),
    ("GET 404", get("/no/such/path"), 404, False, None),
    ("HEAD /info", head("/info"), 200, True, None),
] + [
    ("GET /status", get("/status?code=%d" % c), c, False, b"status %d\n" % c) for c in STATUS_CODES
]

BAD = [
    ("bad request line", b"GARBAGE\r\n\r\n"),
    ("missing Host", b"GET /info HTTP/1.1\r\n\r\n"),
    ("CL and TE", b"POST /info HTTP/1.1\r\n" + HOST
     + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("bad chunk size", b"POST /info HTTP/1.1\r\n" + HOST
     + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    ("space in header name", b"GET /info HTTP/1.1\r\n" + HOST + b"Bad Name: y\r\n\r\n"),
    ("obs-fold", b"GET /info HTTP/1.1\r\n" + HOST + b"X-A: a\r\n folded\r\n\r\n"),
]


class Conn:
    """A client connection with a receive buffer and a fast response reader."""

    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=SOCKET_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0
        self.uses = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise Unanswered("send timeout")
        except OSError as e:
            raise Unanswered("send " + (e.strerror or type(e).__name__))

    def _fill(self):
        try:
            # Acknowledge at once: pyrs (tcp_nodelay off by default) writes the
            # reactor's answers of a pipelined batch before Python's, and Nagle
            # holds the second write until the first is acknowledged; a delayed
            # ACK would cost 40 ms per such batch.
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            chunk = self.sock.recv(262144)
        except socket.timeout:
            raise Unanswered("timeout")
        except OSError as e:
            raise Unanswered(e.strerror or type(e).__name__)
        if not chunk:
            raise Unanswered("EOF")
        if self.pos > 65536 and self.pos * 2 > len(self.buf):
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += chunk

    def response(self, head_only=False, want_body=False):
        """(status, body or None) of the next response."""
        while True:
            end = self.buf.find(b"\r\n\r\n", self.pos)
            if end >= 0:
                break
            self._fill()
        buf, start = self.buf, self.pos
        status = int(buf[start + 9:start + 12])
        length = 0
        if not head_only and status != 204 and status != 304 and status >= 200:
            i = buf.find(b"\r\nContent-Length: ", start, end)
            if i < 0:
                raise ValueError("response without Content-Length")
            j = buf.find(b"\r\n", i + 18, end + 2)
            length = int(buf[i + 18:j])
        # Offsets from the response's start: _fill may move the buffer's contents.
        head_len = end + 4 - start
        need = head_len + length
        while len(self.buf) - self.pos < need:
            self._fill()
        start = self.pos
        body = bytes(self.buf[start + head_len:start + need]) if want_body else None
        self.pos = start + need
        return status, body

    def expect_eof(self):
        """True if the server closes the connection with nothing more sent."""
        if self.pos < len(self.buf):
            return False
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True  # a reset after the last response also means closed


class Worker:
    def __init__(self, wid, addr, quota, seed, progress):
        self.wid = wid
        self.addr = addr
        self.quota = quota
        self.rng = random.Random(seed)
        self.progress = progress
        self.sent = Counter()        # scenario -> requests sent
        self.answered = Counter()    # scenario -> requests answered
        self.errors = Counter()      # kind -> count
        self.unanswered = Counter()  # kind -> valid requests never answered
        self.samples = {}            # error kind -> first messages
        self.statuses = Counter()
        self.done = 0
        self.reported = 0
        self.conns = {}
        self.runs = Counter()
        self.batches = self._batches()
        self.item = 0
        self.upload_64k = bytes(self.rng.getrandbits(8) for _ in range(256)) * 256
        self.upload_chunks = [b"c" * 65536, b"h" * 65536, b"k" * 65536]

    def _batches(self):
        """Pipelined batches: (request bytes, [(name, status, head, body)])."""
        out = []
        rng = random.Random(self.wid)
        for size in [32] * 7 + [128]:
            reqs = [rng.choice(GETS) for _ in range(size)]
            raw = b"".join(r[1] for r in reqs)
            out.append((raw, [(r[0], r[2], r[3], r[4]) for r in reqs]))
        return out

    # ---------------------------------------------------------- bookkeeping

    def error(self, kind, msg):
        self.errors[kind] += 1
        s = self.samples.setdefault(kind, [])
        if len(s) < ERROR_SAMPLES:
            s.append(msg)

    def count(self, n=1):
        self.done += n
        if self.done - self.reported >= REPORT_EVERY:
            with self.progress.get_lock():
                self.progress.value += self.done - self.reported
            self.reported = self.done

    def conn(self, name, max_runs):
        c = self.conns.get(name)
        if c is not None and c.uses >= max_runs:
            c.close()
            c = None
        if c is None:
            c = Conn(self.addr)
            self.conns[name] = c
        c.uses += 1
        return c

    def drop(self, name):
        c = self.conns.pop(name, None)
        if c is not None:
            c.close()

    def check(self, scenario, c, expected, invalid_tail=0):
        """Reads one response per expected (name, status, head, body); the last
        `invalid_tail` requests are malformed ones (not counted as valid)."""
        for k, (name, status, head_only, body) in enumerate(expected):
            try:
                got, data = c.response(head_only, want_body=body is not None)
            except Unanswered as e:
                missing = len(expected) - k
                valid = max(0, missing - invalid_tail)
                self.unanswered[e.kind] += valid
                self.error("unanswered (" + e.kind + ")",
                           f"{scenario} {name}: {missing} of {len(expected)} requests unanswered")
                return False
            except ValueError as e:
                self.error("malformed response", f"{scenario} {name}: {e}")
                return False
            self.answered[scenario] += 1
            self.statuses[got] += 1
            if got != status:
                self.error("wrong status", f"{scenario} {name}: {got}, expected {status}")
            elif body is not None and data != body:
                self.error("wrong body", f"{scenario} {name}: {data[:60]!r}")
        return True

    # ------------------------------------------------------------ scenarios

    def pipelined(self):
        raw, expected = self.batches[self.rng.randrange(len(self.batches))]
        c = self.conn("pipelined", PIPELINED_CONN_BATCHES)
        c.send(raw)
        self.sent["pipelined"] += len(expected)
        if not self.check("pipelined", c, expected):
            self.drop("pipelined")
        return len(expected)

    def keepalive(self):
        c = self.conn("keepalive", KEEPALIVE_CONN_RUNS)
        for _ in range(KEEPALIVE_RUN):
            name, raw, status, head_only, body = self.rng.choice(GETS)
            c.send(raw)
            self.sent["keepalive"] += 1
            if not self.check("keepalive", c, [(name, status, head_only, body)]):
                self.drop("keepalive")
                break
        return KEEPALIVE_RUN

    def uploads(self):
        self.item = (self.item + 1) % 64
        name = "w%d-%d" % (self.wid, self.item)
        doc = b'{"name": "%s", "n": %d}' % (name.encode(), self.item)
        reqs = [
            ("POST /items chunked", post_chunked("/items", [doc[:7], doc[7:]], b"application/json"),
             201, False, None),
            ("GET /items/x", get("/items/" + name), 200, False, None),
            ("DELETE /items/x", delete("/items/" + name), 204, False, None),
            ("POST /items bad JSON", post("/items", b"{not json", b"application/json"), 400, False,
             None),
            ("POST /info 64 KiB", post("/info", self.upload_64k), 200, False, None),
            ("POST /info 192 KiB chunked", post_chunked("/info", self.upload_chunks), 200, False,
             None),
        ]
        c = self.conn("uploads", UPLOAD_CONN_RUNS)
        c.send(b"".join(r[1] for r in reqs))
        self.sent["uploads"] += len(reqs)
        ok = True
        for k, (rname, _, status, head_only, _) in enumerate(reqs):
            try:
                got, data = c.response(head_only, want_body=k >= 4)
            except (Unanswered, ValueError) as e:
                kind = e.kind if isinstance(e, Unanswered) else "malformed"
                missing = len(reqs) - k
                self.unanswered[kind] += missing
                self.error("unanswered (" + kind + ")", f"uploads: {missing} unanswered")
                ok = False
                break
            self.answered["uploads"] += 1
            self.statuses[got] += 1
            if got != status:
                self.error("wrong status", f"uploads {rname}: {got}, expected {status}")
            elif k == 4 and b'"body_length":65536' not in data:
                self.error("wrong body", f"uploads {rname}: {data[-60:]!r}")
            elif k == 5 and b'"body_length":196608' not in data:
                self.error("wrong body", f"uploads {rname}: {data[-60:]!r}")
        if not ok:
            self.drop("uploads")
        return len(reqs)

    def newconn(self):
        name, raw, status, head_only, body = self.rng.choice(GETS)
        raw = raw[:-2] + b"Connection: close\r\n\r\n"
        try:
            c = Conn(self.addr)
        except OSError as e:
            self.error("connect", f"newconn: {e}")
            return 1
        try:
            c.send(raw)
            self.sent["newconn"] += 1
            if self.check("newconn", c, [(name, status, head_only, body)]) and not c.expect_eof():
                self.error("not closed", f"newconn {name}: open after Connection: close")
        except Unanswered as e:
            self.error("send failed (" + e.kind + ")", f"newconn {name}")
        finally:
            c.close()
        return 1

    def bad(self):
        kind, raw = self.rng.choice(BAD)
        good = self.rng.random() < 1 / 3
        n = 1 + good
        try:
            c = Conn(self.addr)
        except OSError as e:
            self.error("connect", f"bad: {e}")
            return n
        try:
            expected = [(kind, 400, False, None)]
            if good:
                g = GETS[0]
                expected.insert(0, (g[0], g[2], g[3], g[4]))
                raw = g[1] + raw
                self.sent["good before bad"] += 1
            c.send(raw)
            self.sent["bad"] += 1
            if self.check("bad", c, expected, invalid_tail=1) and not c.expect_eof():
                self.error("not closed", f"bad {kind}: open after 400")
        except Unanswered as e:
            self.error("send failed (" + e.kind + ")", f"bad {kind}")
        finally:
            c.close()
        return n

    def run(self):
        scenarios = list(SHARES)
        weights = [SHARES[s] / SIZES[s] for s in scenarios]
        funcs = [getattr(self, s) for s in scenarios]
        while self.done < self.quota:
            i = self.rng.choices(range(len(funcs)), weights)[0]
            self.runs[scenarios[i]] += 1
            try:
                n = funcs[i]()
            except Unanswered as e:
                # A send failed: the connection is gone (counted as an error; what
                # was not sent is not counted as sent).
                self.error("send failed (" + e.kind + ")", scenarios[i])
                self.drop(scenarios[i])
                n = 0
            except OSError as e:
                self.error("connect", f"{scenarios[i]}: {e}")
                self.drop(scenarios[i])
                n = 0
            self.count(n)
        for name in list(self.conns):
            self.drop(name)
        with self.progress.get_lock():
            self.progress.value += self.done - self.reported
        return {
            "sent": dict(self.sent), "answered": dict(self.answered),
            "errors": dict(self.errors), "unanswered": dict(self.unanswered),
            "samples": self.samples, "statuses": dict(self.statuses), "runs": dict(self.runs),
        }


def worker_main(wid, addr, quota, seed, progress, results):
    try:
        results.put((wid, Worker(wid, addr, quota, seed, progress).run()))
    except BaseException as e:  # report, never hang the parent
        results.put((wid, {"crash": f"{type(e).__name__}: {e}"}))


# ------------------------------------------------------------------ server


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_server(threads):
    cmd = [PYRS_BIN, PROJECT, "-a", "127.0.0.1", "-p", "0"]
    if threads:
        cmd += ["-t", str(threads)]
    err = open(os.path.join(BENCH, ".soak-stderr.log"), "w+")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                            env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    port = None
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("Port: "):
            port = int(line.split()[1])
        if line.strip() == "Listening...":
            break
    if port is None:
        proc.kill()
        err.seek(0)
        sys.exit("soak: pyrs did not start:\n" + err.read())
    # Keep draining stdout so the server never blocks on it.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, port, err, cmd


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=10_000_000, help="requests in all (10 000 000)")
    ap.add_argument("--clients", type=int, default=max(3, os.cpu_count() or 1),
                    help="client processes (default: max(3, CPUs))")
    ap.add_argument("--threads", type=int, default=0, help="pyrs reactor threads (-t); default: the project's")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", choices=sorted(SHARES), help="run one scenario only (diagnostics)")
    ap.add_argument("--results", default=RESULTS, help="markdown file to update (bench/RESULTS.md)")
    ap.add_argument("--no-results", action="store_true", help="do not write the results file")
    args = ap.parse_args()
    if not os.path.exists(PYRS_BIN):
        sys.exit(f"soak: {PYRS_BIN} missing: run bench/soak (it builds it) or cargo build --release")

    proc, port, err, server_cmd = start_server(args.threads)
    pid = proc.pid
    addr = ("127.0.0.1", port)
    rss = {"boot": rss_kib(pid)}
    print(f"soak: pyrs pid {pid} on port {port}, VmRSS {mib(rss['boot'])}; "
          f"{args.requests:,} requests from {args.clients} client processes", flush=True)

    if args.only:
        for k in SHARES:
            SHARES[k] = 1.0 if k == args.only else 0.0
    progress = mp.Value("q", 0)
    results = mp.Queue()
    quota = [args.requests // args.clients + (1 if i < args.requests % args.clients else 0)
             for i in range(args.clients)]
    procs = [mp.Process(target=worker_main, args=(i, addr, quota[i], args.seed * 1000 + i, progress, results))
             for i in range(args.clients)]
    started = time.time()
    for p in procs:
        p.start()
    # (fraction of requests done, VmRSS KiB), every 0.1 s; the start, mid and end
    # figures are the means over the windows below, so one sample's noise (the
    # allocator's, ~1 MiB) does not decide "flat".
    rss_samples = []
    progress_rss = []  # every 10 s, for the report
    last_print = started
    peak = rss["boot"]
    got = {}
    while len(got) < len(procs):
        while not results.empty():
            wid, res = results.get()
            got[wid] = res
        done = progress.value
        try:
            now_rss = rss_kib(pid)
        except (OSError, RuntimeError):
            print("soak: pyrs exited during the run!", flush=True)
            break
        peak = max(peak, now_rss)
        rss_samples.append((done / args.requests, now_rss))
        now = time.time()
        if now - last_print >= 10:
            progress_rss.append(now_rss)
            print(f"  {done:>11,} requests  {done / (now - started):>9,.0f}/s  VmRSS {mib(now_rss)}",
                  flush=True)
            last_print = now
        if all(not p.is_alive() for p in procs) and results.empty() and len(got) < len(procs):
            time.sleep(0.5)
            if results.empty():
                break
        time.sleep(0.1)
    duration = time.time() - started
    for p in procs:
        p.join(timeout=10)
    alive = proc.poll() is None
    # Idle, after the last client finished.
    rss["after"] = rss_kib(pid) if alive else None
    for k, (lo, hi) in RSS_WINDOWS.items():
        window = [v for f, v in rss_samples if lo <= f < hi]
        rss[k] = sum(window) / len(window) if window else None

    # Stop the server gracefully.
    exit_code = None
    if alive:
        proc.send_signal(signal.SIGTERM)
        try:
            exit_code = proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            exit_code = "killed after 40 s"
    else:
        exit_code = proc.returncode
    err.seek(0)
    stderr_text = err.read()
    err.close()

    # Aggregate.
    sent, answered, errors, unanswered, statuses, runs = (Counter() for _ in range(6))
    samples_by_kind = {}
    crashes = []
    for wid in range(len(procs)):
        res = got.get(wid)
        if res is None:
            crashes.append(f"client {wid}: no result")
            continue
        if "crash" in res:
            crashes.append(f"client {wid}: {res['crash']}")
            continue
        sent.update(res["sent"])
        answered.update(res["answered"])
        errors.update(res["errors"])
        unanswered.update(res["unanswered"])
        statuses.update({int(k): v for k, v in res["statuses"].items()})
        runs.update(res["runs"])
        for k, msgs in res["samples"].items():
            samples_by_kind.setdefault(k, []).extend(msgs)
    total_sent = sum(sent.values())
    total_answered = sum(answered.values())
    valid_unanswered = sum(unanswered.values())
    growth = None
    if rss["start"] and rss["end"]:
        growth = (rss["end"] - rss["start"]) / rss["start"]
    flat = growth is not None and growth < MAX_GROWTH
    handler_errors = len(re.findall(r"^pyrs: error in handler", stderr_text, re.M))
    ok = (not crashes and alive and not errors and valid_unanswered == 0 and flat
          and exit_code == 0)

    lines = []
    lines.append(f"- Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}")
    cmd = "bench/soak" + ("" if args.requests == 10_000_000 else f" --requests {args.requests}")
    lines.append(f"- Command: `{cmd}` ({args.clients} client processes; server: "
                 f"`{' '.join(shlex.quote(os.path.relpath(a, ROOT) if a.startswith(ROOT) else a) for a in server_cmd)}`, "
                 f"release build)")
    lines.append(f"- Machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
                 f"Python {platform.python_version()} (clients and server share the CPUs)")
    lines.append(f"- Duration: {duration:.1f} s, {total_sent / duration:,.0f} requests/s")
    lines.append(f"- Requests: {total_sent:,} sent, {total_answered:,} answered; mix (requests): "
                 + ", ".join(f"{k} {v:,}" for k, v in sorted(sent.items())))
    lines.append("- Responses by status: " + ", ".join(f"{k}: {v:,}" for k, v in sorted(statuses.items())))
    def show(k):
        return mib(rss[k]) if rss[k] else "-"
    lines.append(f"- Server VmRSS (mean over 10-20 %, 45-55 %, 90-100 % of the requests, "
                 f"after a warm-up of {WARM_UP_SHARE:.0%}): start {show('start')}, "
                 f"mid {show('mid')}, end {show('end')}; growth start to end "
                 + (f"{growth:+.2%}" if growth is not None else "-")
                 + (" (flat: under 5 %)" if flat else " (NOT flat)")
                 + (f", mid to end {(rss['end'] - rss['mid']) / rss['mid']:+.2%}"
                    if rss["mid"] and rss["end"] else "")
                 + f"; boot {show('boot')}, peak {mib(peak)}, idle after the run {show('after')}")
    lines.append("- VmRSS every 10 s (MiB): "
                 + ", ".join(f"{v / 1024:.1f}" for v in progress_rss))
    lines.append("- Errors by kind: " + (", ".join(f"{k}: {v:,}" for k, v in sorted(errors.items()))
                                          if errors else "none"))
    for k, msgs in sorted(samples_by_kind.items()):
        lines.append(f"  - {k}, e.g.: " + "; ".join(msgs[:3]))
    lines.append(f"- Unanswered valid requests: {valid_unanswered:,}"
                 + (" (" + ", ".join(f"{k}: {v}" for k, v in unanswered.items()) + ")" if unanswered else ""))
    lines.append(f"- Server: exit code after SIGTERM {exit_code}; {handler_errors} handler "
                 f"tracebacks and {len(stderr_text.splitlines())} stderr lines")
    if crashes:
        lines.append("- Client crashes: " + "; ".join(crashes))
    lines.append(f"- Result: {'PASS' if ok else 'FAIL'}")
    report = "\n".join(lines)
    print("\n" + report, flush=True)
    if stderr_text.strip():
        tail = "\n".join(stderr_text.splitlines()[-10:])
        print("\nserver stderr (last lines):\n" + tail)

    if not args.no_results:
        section = f"## Soak\n\n{START_MARK}\n{report}\n{END_MARK}\n"
        write_results(args.results, section, START_MARK, END_MARK, heading="## Soak")
        print(f"\nsoak: wrote the Soak section of {os.path.relpath(args.results)}")
    try:
        os.unlink(os.path.join(BENCH, ".soak-stderr.log"))
    except OSError:
        pass
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
