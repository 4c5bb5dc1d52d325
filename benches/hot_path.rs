//! `cargo bench --bench hot_path`: the reactor-side costs that wrk cannot isolate.
//! - `encode/*`: encoding a complete response (what the worker does per request).
//! - `conn/pipeline64`: a connection framing 64 pipelined GETs, routing them to
//!   jobs, and taking 64 replies into its write buffer (no syscalls, no Python).
//! - `conn/pipeline64_logged`: the same with the access log on (to /dev/null):
//!   the reactor's cost of building and handing on the log lines.
//! - `conn/reply_1mib`: one GET answered with a 1 MiB response, taken into the
//!   connection's output and consumed (what a large reply costs the reactor).
//! - `handoff/*`: the reactor-to-worker round trip through the crossbeam channel
//!   and the `mio::Waker`, for a batch of 1 and of 64 jobs, with a stub worker
//!   that encodes fixed responses.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mio::{Events, Poll, Token, Waker};
use pyrs::access_log::{AccessLog, Format, DEFAULT_FORMAT};
use pyrs::config::AccessLog as Destination;
use pyrs::conn::{ConnState, Rules};
use pyrs::dispatch::{Batch, ConnRef, ItemKind, Job, Part, Reply, ReplyItem};
use pyrs::response::{self, Persist};
use pyrs::router::Router;
use pyrs::tap::Tap;
use pyrs_parser::Limits;

const GET: &[u8] =
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8094\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n";

/// Rules whose limits never stop the benchmarked pipeline.
fn unbounded_rules<'a>(router: &'a Router, limits: &'a Limits) -> Rules<'a> {
    Rules {
        router,
        mounts: &[],
        limits,
        max_pipelined: 1024,
        max_write_buffer: 1 << 24,
        shed: false,
        uploads: None,
    }
}

fn remote() -> Option<SocketAddr> {
    Some(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::LOCALHOST,
        40000,
    )))
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    let mut out = BytesMut::with_capacity(1 << 20);
    let cases: [(&str, u16, &[u8], &[u8]); 2] = [
        ("hello_200", 200, response::TEXT_HTML, b"Hello, World!"),
        ("not_found_404", 404, response::TEXT_PLAIN, b"Not Found"),
    ];
    for (name, status, content_type, body) in cases {
        g.bench_function(name, |b| {
            b.iter(|| {
                if out.len() > (1 << 19) {
                    out.clear();
                }
                response::simple(
                    &mut out,
                    status,
                    content_type,
                    body,
                    Persist::KeepAlive,
                    false,
                );
            })
        });
    }
    g.finish();
}

fn conn_pipeline(c: &mut Criterion) {
    let router = Router::new(["/"]);
    let limits = Limits::default();
    let rules = unbounded_rules(&router, &limits);
    let pipeline: Vec<u8> = GET.repeat(64);
    let mut reply = BytesMut::new();
    response::simple(
        &mut reply,
        200,
        response::TEXT_HTML,
        b"Hello, World!",
        Persist::KeepAlive,
        false,
    );
    let reply = reply.freeze();
    let me = ConnRef {
        key: 0,
        generation: 0,
    };
    let mut g = c.benchmark_group("conn");
    g.throughput(Throughput::Elements(64));
    let mut conn = ConnState::new(remote());
    let mut batch = Batch::default();
    let mut tap = Tap::off();
    g.bench_function("pipeline64", |b| {
        b.iter(|| {
            conn.feed(&pipeline);
            conn.process(&rules, me, &mut batch, &mut tap);
            for job in batch.jobs.drain(..) {
                conn.on_reply(job.seq, &reply, 0..reply.len(), &mut tap);
            }
            batch.fields.clear();
            conn.written(conn.output().len());
        })
    });
    g.finish();
    // One large response taken into the connection's output and written out.
    let mut large = BytesMut::new();
    response::simple(
        &mut large,
        200,
        response::OCTET_STREAM,
        &vec![b'x'; 1 << 20],
        Persist::KeepAlive,
        false,
    );
    let large = large.freeze();
    let mut g = c.benchmark_group("conn");
    g.throughput(Throughput::Bytes(large.len() as u64));
    g.bench_function("reply_1mib", |b| {
        b.iter(|| {
            conn.feed(GET);
            conn.process(&rules, me, &mut batch, &mut tap);
            for job in batch.jobs.drain(..) {
                conn.on_reply(job.seq, &large, 0..large.len(), &mut tap);
            }
            batch.fields.clear();
            while conn.has_output() {
                let n = conn.output().first().len();
                conn.written(n);
            }
        })
    });
    g.finish();
}

/// `conn/pipeline64` with the access log on (default format, to /dev/null): the
/// reactor's per-request cost of a log line, without the log thread's write.
fn conn_pipeline_logged(c: &mut Criterion) {
    let router = Router::new(["/"]);
    let limits = Limits::default();
    let rules = unbounded_rules(&router, &limits);
    let pipeline: Vec<u8> = GET.repeat(64);
    let mut reply = BytesMut::new();
    response::simple(
        &mut reply,
        200,
        response::TEXT_HTML,
        b"Hello, World!",
        Persist::KeepAlive,
        false,
    );
    let reply = reply.freeze();
    let me = ConnRef {
        key: 0,
        generation: 0,
    };
    let format = Format::parse(DEFAULT_FORMAT).expect("the default format");
    let log = AccessLog::start(&Destination::File("/dev/null".into()), format, 0)
        .expect("open /dev/null")
        .expect("a log");
    let mut tap = Tap::new(Some(log.sink()), None);
    let mut g = c.benchmark_group("conn");
    g.throughput(Throughput::Elements(64));
    let mut conn = ConnState::new(remote());
    let mut batch = Batch::default();
    g.bench_function("pipeline64_logged", |b| {
        b.iter(|| {
            conn.feed(&pipeline);
            conn.process(&rules, me, &mut batch, &mut tap);
            for job in batch.jobs.drain(..) {
                conn.on_reply(job.seq, &reply, 0..reply.len(), &mut tap);
            }
            batch.fields.clear();
            conn.written(conn.output().len());
            tap.round_end(1);
        })
    });
    g.finish();
}

/// A stub worker: answers every batch with fixed responses, one reply per batch.
fn stub_worker(
    rx: crossbeam_channel::Receiver<Batch>,
    tx: crossbeam_channel::Sender<Reply>,
    waker: Arc<Waker>,
) {
    let mut out = BytesMut::with_capacity(1 << 16);
    while let Ok(batch) = rx.recv() {
        let mut items = Vec::with_capacity(batch.jobs.len());
        for job in &batch.jobs {
            response::simple(
                &mut out,
                200,
                response::TEXT_HTML,
                b"Hello, World!",
                Persist::KeepAlive,
                false,
            );
            items.push(ReplyItem {
                conn: job.conn,
                seq: job.seq,
                end: out.len(),
                kind: ItemKind::Response,
                part: Part::Whole,
            });
        }
        let reply = Reply {
            out: out.split().freeze(),
            items,
            flow: None,
        };
        if tx.send(reply).is_err() {
            return;
        }
        let _ = waker.wake();
    }
}

fn handoff(c: &mut Criterion) {
    let mut poll = Poll::new().expect("poll");
    let waker = Arc::new(Waker::new(poll.registry(), Token(1)).expect("waker"));
    let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded::<Batch>();
    let (reply_tx, reply_rx) = crossbeam_channel::unbounded::<Reply>();
    let worker = {
        let waker = waker.clone();
        thread::spawn(move || stub_worker(jobs_rx, reply_tx, waker))
    };
    // Real jobs, framed from real bytes.
    let router = Router::new(["/"]);
    let limits = Limits::default();
    let rules = unbounded_rules(&router, &limits);
    let mut template = Batch::default();
    let mut conn = ConnState::new(remote());
    conn.feed(&GET.repeat(64));
    conn.process(
        &rules,
        ConnRef {
            key: 0,
            generation: 0,
        },
        &mut template,
        &mut Tap::off(),
    );
    let mut events = Events::with_capacity(16);
    let mut g = c.benchmark_group("handoff");
    for size in [1usize, 64] {
        g.throughput(Throughput::Elements(size as u64));
        g.bench_with_input(BenchmarkId::new("round_trip", size), &size, |b, &size| {
            b.iter(|| {
                let jobs: Vec<Job> = template.jobs[..size].to_vec();
                let fields = template.fields[..jobs[size - 1].fields.end as usize].to_vec();
                jobs_tx
                    .send(Batch {
                        reactor: 0,
                        jobs,
                        fields,
                        ws: Vec::new(),
                    })
                    .expect("worker alive");
                loop {
                    if let Ok(reply) = reply_rx.try_recv() {
                        break reply;
                    }
                    let _ = poll.poll(&mut events, Some(Duration::from_secs(1)));
                }
            })
        });
    }
    g.finish();
    drop(jobs_tx);
    let _ = worker.join();
}

criterion_group!(
    benches,
    encode,
    conn_pipeline,
    conn_pipeline_logged,
    handoff
);
criterion_main!(benches);
