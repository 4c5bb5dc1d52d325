//! Micro-benchmark of the framing layer against bare httparse on the same bytes:
//! a pipeline of 64 typical GET requests, and one POST with a 1 MiB chunked body.
//! The difference is what `Framer` adds (finding the head, RFC 9112 checks, target
//! split, chunked scanning) over httparse's own parsing. Run with
//! `cargo bench -p pyrs-parser --bench parse`; results go in bench/RESULTS.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pyrs_parser::{decode_chunked, Body, Framer, Limits, Progress, MAX_HEADERS};

/// Requests in the pipelined GET benchmark.
const PIPELINE: usize = 64;
/// Decoded size of the chunked body.
const CHUNKED_BODY: usize = 1 << 20;
/// Chunk size used by the chunked body (a common client buffer size).
const CHUNK: usize = 16 * 1024;

/// A GET as a browser or load generator sends it (about 330 bytes, 7 fields).
fn typical_get(i: usize) -> String {
    format!(
        "GET /api/items/{i}?page=2&sort=name HTTP/1.1\r\n\
         Host: bench.example.com:8080\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
         Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
         Accept-Language: en-US,en;q=0.5\r\n\
         Accept-Encoding: gzip, deflate, br\r\n\
         Connection: keep-alive\r\n\
         Cookie: session=0123456789abcdef0123456789abcdef\r\n\r\n"
    )
}

fn pipeline() -> Vec<u8> {
    (0..PIPELINE)
        .flat_map(|i| typical_get(i).into_bytes())
        .collect()
}

fn chunked_request() -> Vec<u8> {
    let mut buf = b"POST /upload HTTP/1.1\r\nHost: bench.example.com\r\n\
        Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    for n in 0..CHUNKED_BODY / CHUNK {
        buf.extend_from_slice(format!("{CHUNK:x}\r\n").as_bytes());
        buf.resize(buf.len() + CHUNK, b'a' + (n % 26) as u8);
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"0\r\n\r\n");
    buf
}

/// Frames every request in `buf` as a connection does; returns how many.
fn frame_all(buf: &[u8], limits: &Limits) -> usize {
    let mut framer = Framer::new();
    let mut off = 0;
    let mut n = 0;
    while off < buf.len() {
        match framer.poll(&buf[off..], limits) {
            Ok(Progress::Complete(f)) => {
                black_box(&f);
                off += f.len;
                n += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    n
}

/// The same bytes through bare `httparse::Request::parse`, with the same header
/// capacity the framer gives httparse.
fn httparse_all(buf: &[u8]) -> usize {
    let mut off = 0;
    let mut n = 0;
    while off < buf.len() {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[off..]) {
            Ok(httparse::Status::Complete(len)) => {
                black_box(&req);
                off += len;
                n += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    n
}

/// As [`httparse_all`], with httparse's uninitialised-header entry point (what the
/// framer uses): the baseline without the cost of zeroing 100 header slots.
fn httparse_uninit_all(buf: &[u8]) -> usize {
    let mut off = 0;
    let mut n = 0;
    while off < buf.len() {
        let mut headers = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(&buf[off..], &mut headers) {
            Ok(httparse::Status::Complete(len)) => {
                black_box(&req);
                off += len;
                n += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    n
}

/// httparse's head parser plus its chunk-size parser over the body, skipping the
/// data but checking the CRLF after it: the least a chunked body costs to frame
/// with httparse alone (no trailers, no size limit).
fn httparse_chunked(buf: &[u8]) -> usize {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(mut off)) = req.parse(buf) else {
        panic!("head");
    };
    black_box(&req);
    loop {
        match httparse::parse_chunk_size(&buf[off..]) {
            Ok(httparse::Status::Complete((used, 0))) => {
                // Last chunk; no trailers here, just the final CRLF.
                assert_eq!(&buf[off + used..off + used + 2], b"\r\n");
                return off + used + 2;
            }
            Ok(httparse::Status::Complete((used, size))) => {
                off += used + size as usize;
                assert_eq!(&buf[off..off + 2], b"\r\n");
                off += 2;
            }
            other => panic!("{other:?}"),
        }
    }
}

fn bench_pipeline(c: &mut Criterion) {
    let buf = pipeline();
    let limits = Limits::default();
    assert_eq!(frame_all(&buf, &limits), PIPELINE);
    assert_eq!(httparse_all(&buf), PIPELINE);
    assert_eq!(httparse_uninit_all(&buf), PIPELINE);
    let mut g = c.benchmark_group("pipeline_64_get");
    g.throughput(Throughput::Elements(PIPELINE as u64));
    g.bench_function("framer", |b| b.iter(|| frame_all(black_box(&buf), &limits)));
    g.bench_function("httparse", |b| b.iter(|| httparse_all(black_box(&buf))));
    g.bench_function("httparse_uninit", |b| {
        b.iter(|| httparse_uninit_all(black_box(&buf)))
    });
    g.finish();
}

fn bench_chunked(c: &mut Criterion) {
    let buf = chunked_request();
    let limits = Limits::default();
    assert_eq!(frame_all(&buf, &limits), 1);
    assert_eq!(httparse_chunked(&buf), buf.len());
    let mut g = c.benchmark_group("chunked_1mib");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("framer", |b| b.iter(|| frame_all(black_box(&buf), &limits)));
    g.bench_function("httparse", |b| b.iter(|| httparse_chunked(black_box(&buf))));
    let mut out = Vec::with_capacity(CHUNKED_BODY);
    g.bench_function("framer_and_decode", |b| {
        b.iter(|| {
            let mut framer = Framer::new();
            let Ok(Progress::Complete(f)) = framer.poll(black_box(&buf), &limits) else {
                panic!("frame");
            };
            let Body::Chunked { start, end, .. } = f.body else {
                panic!("body");
            };
            decode_chunked(&buf[start..end], limits.max_body, limits.max_head, &mut out)
                .expect("decodes");
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_pipeline, bench_chunked);
criterion_main!(benches);
