#!/usr/bin/env python3
"""Writes the named seed inputs (`seed-*`) of every fuzz target's corpus.

Each seed is a request stream (valid and invalid requests, RFC 9112 edge cases)
wrapped in the input layout its target reads (see parser/tests/fuzz_checks/mod.rs):

    parse_request     [limits] stream
    split_invariance  [limits] [cuts] cut*2 stream
    chunked_body      [limits] [cuts] cut*2 chunked-body
    conn              [conn flags] [limits] [cuts] cut*2 stream

Run from anywhere: `python3 fuzz/make_seeds.py`. Files produced by libFuzzer (named
by hash) are left alone.
"""

import pathlib
import struct

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"

DEFAULT = 0x00  # default limits
TINY = 0x80 | 0x03 | (0x01 << 3) | (0x02 << 5)  # line 32, head 96, body 300
UNLIMITED_BODY = 0x80 | 0x07 | (0x03 << 3) | (0x03 << 5)  # line 64, head 224, body u64::MAX

H = b"Host: h\r\n"

VALID = {
    "get": b"GET / HTTP/1.1\r\n" + H + b"\r\n",
    "get-query": b"GET /a/b?x=1&y=2 HTTP/1.1\r\n" + H + b"Accept: */*\r\nUser-Agent: seed\r\n\r\n",
    "http10": b"GET /py HTTP/1.0\r\n\r\n",
    "http10-keepalive": b"GET /py HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "close": b"GET /py HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n",
    "post-length": b"POST /py HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello",
    "post-chunked": b"POST /api/x HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
    b"5;a=b;c=\"d e\"\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
    "options-asterisk": b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
    "absolute-form": b"GET http://example.com/py?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "absolute-no-path": b"GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "same-lengths": b"POST /py HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 3, 3\r\n\r\nabc",
    "expect-continue": b"POST /py HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    "head": b"HEAD /nope HTTP/1.1\r\n" + H + b"\r\n",
    "leading-crlf": b"\r\n\r\nGET /py HTTP/1.1\r\n" + H + b"\r\n",
    "bare-lf-head": b"GET /lf HTTP/1.1\nHost: h\n\n",
    "te-list": b"POST /py HTTP/1.1\r\n" + H + b"Transfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n",
    "pipeline": b"GET /a HTTP/1.1\r\n" + H + b"\r\n"
    b"POST /py HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nxyz"
    b"POST /api/c HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
    b"HEAD /py HTTP/1.1\r\n" + H + b"\r\n"
    b"GET /d HTTP/1.0\r\n\r\n",
    "http12": b"GET /py HTTP/1.2\r\n" + H + b"\r\n",
    "registered-method": b"UPDATEREDIRECTREF /py HTTP/1.1\r\n" + H + b"\r\n",
    "method-at-bound": b"M" * 32 + b" /py HTTP/1.1\r\n" + H + b"\r\n",
    "host-ipv6": b"GET /py HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
    "host-empty": b"GET /py HTTP/1.1\r\nHost:\r\n\r\n",
    "pct-target": b"GET /a%20b/c;d=e?f=%41&g=:@/? HTTP/1.1\r\n" + H + b"\r\n",
    "pipeline-then-error": b"GET /py HTTP/1.1\r\n" + H + b"\r\nGET /x HTTP/1.1\r\n" + H + b"\r\nBAD\x01 / HTTP/1.1\r\n\r\n",
}

INVALID = {
    "length-and-te": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "differing-lengths": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "length-list": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3, 4\r\n\r\nabcd",
    "signed-length": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +3\r\n\r\nabc",
    "huge-length": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999\r\n\r\n",
    "te-gzip": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n",
    "te-chunked-gzip": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n",
    "te-gzip-chunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "chunk-overflow": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
    "chunk-bad-size": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n 1\r\na\r\n0\r\n\r\n",
    "chunk-no-crlf": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
    "chunk-bare-lf": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n",
    "chunk-bad-ext": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3;=x\r\nabc\r\n0\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\r\n  2\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
    "nul-in-value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    "ctl-in-name": b"GET / HTTP/1.1\r\n" + H + b"X\x01A: a\r\n\r\n",
    "missing-host": b"GET / HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "get-asterisk": b"GET * HTTP/1.1\r\n" + H + b"\r\n",
    "authority-form": b"GET example.com:80 HTTP/1.1\r\n" + H + b"\r\n",
    "http09": b"GET /\r\n\r\n",
    "http20": b"GET / HTTP/2.0\r\n" + H + b"\r\n",
    "connect": b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "tls-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "bad-method": b"G\x7fT / HTTP/1.1\r\n" + H + b"\r\n",
    "method-over-bound": b"M" * 33 + b" / HTTP/1.1\r\n" + H + b"\r\n",
    "fragment": b"GET /a#b HTTP/1.1\r\n" + H + b"\r\n",
    "non-ascii-target": b"GET /\xce\xb4 HTTP/1.1\r\n" + H + b"\r\n",
    "bad-pct": b"GET /%zz HTTP/1.1\r\n" + H + b"\r\n",
    "absolute-userinfo": b"GET http://u@example.com/ HTTP/1.1\r\n" + H + b"\r\n",
    "host-userinfo": b"GET / HTTP/1.1\r\nHost: u@h\r\n\r\n",
    "host-space": b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    "http1-10": b"GET / HTTP/1.10\r\n" + H + b"\r\n",
    "bare-cr-lead": b"\rGET / HTTP/1.1\r\n" + H + b"\r\n",
    "bare-cr-version": b"GET / HTTP/\r\r1.1\r\n" + H + b"\r\n",
    "too-many-headers": b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n",
}

# Streams that only mean something under the tiny limits (414, 431, 413).
TINY_LIMITS = {
    "long-line": b"GET /" + b"a" * 40 + b" HTTP/1.1\r\n" + H + b"\r\n",
    "long-head": b"GET / HTTP/1.1\r\n" + H + b"X-Filler: " + b"a" * 100 + b"\r\n\r\n",
    "line-at-limit": b"GET /" + b"a" * 18 + b" HTTP/1.1\r\n" + H + b"\r\n",
    "big-body": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 301\r\n\r\n" + b"x" * 301,
    "long-method": b"M" * 40 + b" / HTTP/1.1\r\n" + H + b"\r\n",
    "big-chunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n12d\r\n" + b"x" * 301 + b"\r\n0\r\n\r\n",
}

CHUNKED = {
    "simple": b"5\r\nhello\r\n0\r\n\r\n",
    "extensions": b"5;a=b;c=\"d e\" ; f = g\r\nhello\r\n0;last\r\n\r\n",
    "quoted-escape": b"1;q=\"a\\\"b\"\r\nx\r\n0\r\n\r\n",
    "trailers": b"1\r\nx\r\n0\r\nX-A: 1\r\nX-B: two words\r\n\r\n",
    "uppercase-hex": b"A\r\n0123456789\r\n0\r\n\r\n",
    "leading-zeros": b"0000000000000000000001\r\nx\r\n0\r\n\r\n",
    "max-u64": b"ffffffffffffffff\r\nx",
    "max-u64-plus-one": b"1\r\nx\r\nffffffffffffffff\r\n",
    "overflow": b"10000000000000000\r\n",
    "near-max": b"fffffffffffffffe\r\n",
    "bare-lf": b"1\nx\n0\n\n",
    "bare-lf-trailer": b"0\r\nX: 1\n\r\n",
    "no-crlf-after-data": b"1\r\nxy\r\n0\r\n\r\n",
    "bad-trailer": b"0\r\nnot a field\r\n\r\n",
    "empty-ext-name": b"1;\r\nx\r\n0\r\n\r\n",
    "unterminated-quote": b"1;a=\"x\r\nx\r\n0\r\n\r\n",
    "long-ext": b"1;a=" + b"b" * 5000 + b"\r\nx\r\n0\r\n\r\n",
    "signed": b"+1\r\nx\r\n0\r\n\r\n",
    "ext-trailing-ws": b"1;a=b \r\nx\r\n0\r\n\r\n",
    "ext-bws": b"1 ; a = b ;c= \"d\"\r\nx\r\n0\r\n\r\n",
    "trailing-bytes": b"0\r\n\r\nGET / HTTP/1.1\r\n",
}


def cuts(stream, n):
    """`n` cut points spread over the stream, as little-endian u16s."""
    if not stream:
        return b""
    return b"".join(struct.pack("<H", (len(stream) * (i + 1)) // (n + 1)) for i in range(n))


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


def main():
    streams = [(n, s, DEFAULT) for n, s in {**VALID, **INVALID}.items()]
    streams += [(n, s, TINY) for n, s in TINY_LIMITS.items()]
    for name, stream, limits in streams:
        write("parse_request", name, bytes([limits]) + stream)
        ncuts = 3
        write("split_invariance", name, bytes([limits, ncuts]) + cuts(stream, ncuts) + stream)
        # conn flags: replies oldest first after each piece; every 5th seed
        # replies newest first, drains, or sheds instead.
        flags = [0x00, 0x04, 0x08, 0x10, 0x80][len(name) % 5]
        write("conn", name, bytes([flags, limits, ncuts]) + cuts(stream, ncuts) + stream)
    for name, body in CHUNKED.items():
        for limits, suffix in [(DEFAULT, ""), (UNLIMITED_BODY, "-unlimited")]:
            ncuts = 2
            write("chunked_body", name + suffix, bytes([limits, ncuts]) + cuts(body, ncuts) + body)


if __name__ == "__main__":
    main()
