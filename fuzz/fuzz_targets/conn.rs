//! The connection state machine the reactor drives (`pyrs::conn::ConnState`): bytes
//! in, response bytes out, with a stub in place of Python that answers each `Job`
//! through `on_reply` with a fixed response tagged with its sequence number. So
//! pipelining, keep-alive, 100-continue, drain and error-close logic are fuzzed, not
//! just the parser.
//!
//! Input layout: byte 0 is the connection config below; the rest is the layout the
//! parser targets share (see `split_input`: limits, cut count, cuts, stream). The
//! expected answers come from framing the whole stream with the parser alone
//! (whose split invariance the `split_invariance` target checks): one answer per
//! request in request order (the stub's for routed paths, `404` otherwise, `503`
//! for routed paths while shedding), ending at the first request that does not
//! keep the connection alive or at the error response; nothing after that.

#![no_main]

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use libfuzzer_sys::fuzz_target;
use bytes::Bytes;
use pyrs::conn::{ConnState, Rules};
use pyrs::dispatch::{Batch, ConnRef, Job};
use pyrs_parser::Field;
use pyrs::router::{Route, Router};
use pyrs::tap::Tap;

#[allow(dead_code)]
#[path = "../../parser/tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

use fuzz_checks::{feed, split_input, Request};

const ME: ConnRef = ConnRef {
    key: 7,
    generation: 3,
};

/// Config bits 0-1: how many waiting jobs the stub answers after each piece (all,
/// none until the end, half, one).
const REPLY_POLICY: u8 = 0b0000_0011;
/// Answer newest first, as `async` handlers finishing out of order would.
const NEWEST_FIRST: u8 = 0b0000_0100;
/// Call `drain` (graceful stop) after the first piece.
const DRAIN: u8 = 0b0000_1000;
/// Call `peer_closed` after the last piece.
const PEER_CLOSE: u8 = 0b0001_0000;
/// Bits 5-6: `max_pipelined` 64, 1, 2 or 5; with 5, also a 256-byte write buffer.
const PIPELINE: u8 = 0b0110_0000;
/// Answer routed requests with 503 (`shed`).
const SHED: u8 = 0b1000_0000;

/// Steps without progress after which the exchange counts as stuck.
const MAX_ROUNDS: usize = 100_000;

/// One response as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The stub's response to job `seq`.
    Python(u64),
    /// A response the connection made itself (404, 503, or a framing error).
    Reactor { status: u16, close: bool },
}

fuzz_target!(|data: &[u8]| check_conn(data));

fn check_conn(input: &[u8]) {
    let cfg = input.first().copied().unwrap_or(0);
    let (limits, cuts, stream) = split_input(input.get(1..).unwrap_or(&[]));
    let drain = cfg & DRAIN != 0;
    let shed = cfg & SHED != 0;
    let router = Router::new(["/py", "/api/*"]);
    let (max_pipelined, max_write_buffer) = match (cfg & PIPELINE) >> 5 {
        0 => (64, 1 << 20),
        1 => (1, 1 << 20),
        2 => (2, 1 << 20),
        _ => (5, 256),
    };
    let rules = Rules {
        router: &router,
        mounts: &[],
        limits: &limits,
        max_pipelined,
        max_write_buffer,
        shed,
        uploads: None,
    };

    // What the connection must answer, from the parser alone. Job sequence numbers
    // count every answer slot, so the stub's `n`th job is request `seq`.
    let model = feed(stream, &[], &limits);
    let mut expected = Vec::new();
    let mut python: Vec<(u32, &Request)> = Vec::new();
    let mut closes = false;
    for r in &model.requests {
        match router.find(&r.path) {
            Some(Route::Module(route)) if !shed => {
                expected.push(Answer::Python(0));
                python.push((route, r));
            }
            Some(_) => expected.push(Answer::Reactor {
                status: 503,
                close: !r.keep_alive,
            }),
            None => expected.push(Answer::Reactor {
                status: 404,
                close: !r.keep_alive,
            }),
        }
        if !r.keep_alive {
            closes = true;
            break;
        }
    }
    if let (false, Some(e)) = (closes, model.error) {
        expected.push(Answer::Reactor {
            status: e.status(),
            close: true,
        });
        closes = true;
    }

    let mut ex = Exchange {
        c: ConnState::new(Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9)))),
        socket: VecDeque::new(),
        eof: false,
        eof_seen: false,
        batch: Batch::default(),
        pending: VecDeque::new(),
        python,
        next_job: 0,
        seqs: Vec::new(),
        wire: Vec::new(),
        drain,
    };
    let mut fed = 0;
    let ends = cuts.iter().copied().chain(std::iter::once(stream.len()));
    for (i, p) in ends.enumerate() {
        let p = p.max(fed);
        ex.socket.push_back(stream[fed..p].to_vec());
        fed = p;
        let policy = cfg & REPLY_POLICY;
        ex.pump(&rules, policy, cfg & NEWEST_FIRST != 0, i == 0);
    }
    // The client half-closes (if the input says so) and keeps reading; Python
    // answers everything.
    ex.eof = cfg & PEER_CLOSE != 0;
    ex.pump(&rules, ALL, cfg & NEWEST_FIRST != 0, false);
    assert_eq!(ex.c.inflight(), 0, "answers still owed");
    assert!(
        ex.c.is_closing() || ex.socket.is_empty(),
        "bytes left unread"
    );

    // Python answers carry the sequence number of their job; the model's
    // placeholders take them in job order.
    let mut seqs = ex.seqs.iter();
    for e in expected.iter_mut() {
        if let Answer::Python(seq) = e {
            match seqs.next() {
                Some(&s) => *seq = s,
                None => break,
            }
        }
    }
    let (answers, continues) = answers(&ex.wire);
    let expect_continue = model.requests.iter().filter(|r| r.expect_continue).count();
    assert!(
        continues <= expect_continue + 1,
        "{continues} interim responses for {expect_continue} requests that asked"
    );
    if drain {
        // A graceful stop may end the exchange early, and its last answer then
        // closes: what was answered is a prefix of the full exchange.
        assert!(
            answers.len() <= expected.len(),
            "{answers:?} vs {expected:?}"
        );
        for (k, (a, e)) in answers.iter().zip(&expected).enumerate() {
            let last = k + 1 == answers.len();
            match (a, e) {
                (Answer::Python(x), Answer::Python(y)) => assert_eq!(x, y, "answer {k}"),
                (
                    Answer::Reactor { status, close },
                    Answer::Reactor {
                        status: s,
                        close: c,
                    },
                ) => {
                    assert_eq!(status, s, "answer {k}");
                    assert!(close == c || last, "answer {k} closes early");
                }
                _ => panic!("answer {k}: {a:?} but expected {e:?}"),
            }
        }
        // Draining closes as soon as nothing is in flight and no request is partial.
        assert!(
            ex.c.is_closing() || ex.c.has_input(),
            "drained but open"
        );
    } else {
        assert_eq!(answers, expected, "answers in request order");
        assert_eq!(ex.c.is_closing(), closes || ex.eof_seen, "closing state");
    }

    // Once closing, nothing more is produced, whatever else arrives.
    if ex.c.is_closing() {
        assert!(
            ex.c.finished(),
            "closing with everything answered and written"
        );
        ex.c.feed(b"GET /py HTTP/1.1\r\nHost: h\r\n\r\nGET /x HTTP/1.1\r\n\r\n");
        ex.c.process(&rules, ME, &mut ex.batch, &mut Tap::off());
        assert!(ex.batch.is_empty(), "a request parsed after closing");
        assert!(!ex.c.has_output(), "an answer after closing");
    }
}

/// The connection and what stands in for the reactor, the worker and the client.
struct Exchange<'m> {
    c: ConnState,
    /// Pieces sent by the client and not read yet: like the reactor, the exchange
    /// reads only while the connection is not blocked.
    socket: VecDeque<Vec<u8>>,
    /// The client has half-closed: a read after the last piece sees end of file.
    eof: bool,
    eof_seen: bool,
    batch: Batch,
    /// Sequence numbers of the jobs handed to the stub and not answered yet.
    pending: VecDeque<u64>,
    /// The requests the model expects to reach Python, in order, with their route.
    python: Vec<(u32, &'m Request)>,
    next_job: usize,
    /// Sequence numbers of the jobs, in the order they were made.
    seqs: Vec<u64>,
    /// Everything written to the client.
    wire: Vec<u8>,
    drain: bool,
}

/// Reply policy: answer every waiting job.
const ALL: u8 = 0;

impl Exchange<'_> {
    /// Reactor rounds: process, read what the socket holds while not blocked (end of
    /// file included), hand out jobs, let the stub answer some (`policy`), write;
    /// repeated until nothing moves.
    fn pump(&mut self, rules: &Rules<'_>, policy: u8, newest_first: bool, first: bool) {
        for round in 0.. {
            assert!(round < MAX_ROUNDS, "no progress");
            let before = self.progress();
            self.c.process(rules, ME, &mut self.batch, &mut Tap::off());
            self.take_jobs();
            while !self.c.read_blocked(rules) {
                match self.socket.pop_front() {
                    Some(piece) => {
                        self.c.feed(&piece);
                        self.c.process(rules, ME, &mut self.batch, &mut Tap::off());
                        self.take_jobs();
                    }
                    None => {
                        if self.eof && !self.eof_seen {
                            self.eof_seen = true;
                            self.c.peer_closed();
                        }
                        break;
                    }
                }
            }
            if first && round == 0 && self.drain {
                self.c.drain();
            }
            let n = match policy {
                ALL => self.pending.len(),
                1 => 0,
                2 => self.pending.len().div_ceil(2),
                _ => self.pending.len().min(1),
            };
            self.reply(n, newest_first);
            self.write();
            if self.progress() == before {
                break;
            }
        }
    }

    fn progress(&self) -> (usize, usize, usize, usize, usize, bool) {
        (
            self.socket.len(),
            self.c.input_len(),
            self.next_job,
            self.pending.len(),
            self.wire.len(),
            self.eof_seen,
        )
    }

    fn take_jobs(&mut self) {
        let fields = std::mem::take(&mut self.batch.fields);
        for job in self.batch.jobs.drain(..) {
            let (route, r) =
                self.python.get(self.next_job).copied().unwrap_or_else(|| {
                    panic!("job {} that the parser did not frame", self.next_job)
                });
            check_job(&job, &fields, route, r, self.drain);
            assert!(
                self.seqs.last().map_or(true, |&s| s < job.seq),
                "job sequence numbers increase"
            );
            self.seqs.push(job.seq);
            self.pending.push_back(job.seq);
            self.next_job += 1;
        }
    }

    /// Answers `n` waiting jobs, oldest or newest first.
    fn reply(&mut self, n: usize, newest_first: bool) {
        for _ in 0..n {
            let seq = if newest_first {
                self.pending.pop_back()
            } else {
                self.pending.pop_front()
            };
            let Some(seq) = seq else { break };
            let resp = format!("HTTP/1.1 200 OK\r\nX-Seq: {seq}\r\nContent-Length: 0\r\n\r\n");
            let resp = Bytes::from(resp);
            self.c.on_reply(seq, &resp, 0..resp.len(), &mut Tap::off());
        }
    }

    /// The client reads everything written so far.
    fn write(&mut self) {
        while self.c.has_output() {
            let chunk = self.c.output().first();
            let n = chunk.len();
            self.wire.extend_from_slice(chunk);
            self.c.written(n);
        }
    }
}

/// The job for the `n`th Python request carries that request's bytes, header
/// fields (`fields[job.fields]` of its batch) and body.
fn check_job(job: &Job, fields: &[Field], route: u32, r: &Request, drain: bool) {
    assert_eq!(job.conn, ME);
    assert_eq!(job.route, route);
    assert_eq!(job.data.len(), r.wire_len, "job bytes");
    assert_eq!(job.head.method.get(&job.data), &r.method[..]);
    assert_eq!(job.head.target.get(&job.data), &r.target[..]);
    assert_eq!(job.head.path_bytes(&job.data), &r.path[..]);
    assert_eq!(&job.body[..], &r.body[..], "job body");
    let spans = &fields[job.fields.start as usize..job.fields.end as usize];
    let headers: Vec<(Vec<u8>, Vec<u8>)> = spans
        .iter()
        .map(|f| (f.name.get(&job.data).to_vec(), f.value.get(&job.data).to_vec()))
        .collect();
    assert_eq!(headers, r.headers, "job header fields");
    if !drain {
        assert_eq!(job.head.keep_alive, r.keep_alive);
    }
}

/// Splits `out` into responses (every response, and no body the connection writes,
/// starts with `HTTP/1.1 `); returns the final ones and the count of `100 Continue`.
fn answers(out: &[u8]) -> (Vec<Answer>, usize) {
    const START: &[u8] = b"HTTP/1.1 ";
    assert!(
        out.is_empty() || out.starts_with(START),
        "output starts mid-response"
    );
    let mut starts: Vec<usize> = (0..out.len())
        .filter(|&i| out[i..].starts_with(START))
        .collect();
    starts.push(out.len());
    let mut list = Vec::new();
    let mut continues = 0;
    for w in starts.windows(2) {
        let resp = &out[w[0]..w[1]];
        let text = std::str::from_utf8(resp).expect("responses are ASCII");
        let status: u16 = text[START.len()..START.len() + 3]
            .parse()
            .expect("a status code");
        if status == 100 {
            assert_eq!(resp, b"HTTP/1.1 100 Continue\r\n\r\n");
            continues += 1;
        } else if let Some(seq) = text.split("X-Seq: ").nth(1) {
            let seq = seq.split("\r\n").next().expect("split yields one item");
            list.push(Answer::Python(seq.parse().expect("a sequence number")));
        } else {
            assert!(text.contains("\r\nServer: pyrs\r\n"), "{text:?}");
            list.push(Answer::Reactor {
                status,
                close: text.contains("\r\nConnection: close\r\n"),
            });
        }
    }
    (list, continues)
}
