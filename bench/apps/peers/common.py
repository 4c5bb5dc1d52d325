"""Shared by the peer apps: address from the environment (set by bench/harness.py)."""
import json
import os

HOST = os.environ.get("BENCH_HOST", "127.0.0.1")
PORT = int(os.environ.get("BENCH_PORT", "8000"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))
HELLO = b"Hello, World!"


def json_reply(raw):
    """json in, dict out: the same work as pyrs's Bench.json."""
    data = json.loads(raw)
    return {"hello": data["name"], "count": data["count"] + 1, "tags": data["tags"]}


def fork_workers():
    """After a listening socket exists: fork WORKERS-1 children sharing it (unpinned mode)."""
    for _ in range(WORKERS - 1):
        if os.fork() == 0:
            return
