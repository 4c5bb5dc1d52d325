//! One connection's HTTP state, without the socket: read and write buffers, the
//! framer, and the queue that keeps responses in request order when some are
//! answered at once by the reactor (404, 400, static files, ...) and others later
//! by Python. Owned and run by the connection's reactor thread; also driven
//! directly by tests and fuzz targets (bytes in, response bytes out).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::RawFd;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use pyrs_parser::{decode_chunked, Body, Frame, Framer, Head, Limits, ParseError, Progress};

use crate::buffers::{self, BufPool, ReadOutcome};
use crate::dispatch::{Batch, ConnRef, Job};
use crate::output::{FileSlice, Output, SHARE_MIN};
use crate::response::{self, Persist};
use crate::router::{Route, Router};
use crate::statics::{self, Mount};
use crate::tls::TlsInfo;

/// A response slot in request order. Python slots start empty; reactor answers
/// queued behind a Python slot carry their bytes, and a static file's body
/// waits here with its head until every earlier answer has gone to the output.
#[derive(Debug)]
struct Slot {
    ready: Option<Bytes>,
    file: Option<FileSlice>,
}

impl Slot {
    const PYTHON: Slot = Slot {
        ready: None,
        file: None,
    };

    fn ready(bytes: Bytes) -> Slot {
        Slot {
            ready: Some(bytes),
            file: None,
        }
    }
}

/// The reactor's rules for [`ConnState::process`]: routes, limits and load state.
pub struct Rules<'a> {
    pub router: &'a Router,
    /// The static mounts `Route::Static` indexes.
    pub mounts: &'a [Mount],
    pub limits: &'a Limits,
    /// Requests parsed ahead of their responses; past this the connection stops
    /// reading until responses drain, so one client's pipeline cannot grow server
    /// memory without bound.
    pub max_pipelined: usize,
    /// Response bytes buffered; past this the connection stops reading until the
    /// client takes its responses.
    pub max_write_buffer: usize,
    /// The Python worker is too far behind: answer requests for Python with 503.
    pub shed: bool,
}

/// Where a connection stands, for timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing buffered, nothing owed: a keep-alive connection between requests.
    Idle,
    /// Part of a request head has arrived.
    Head,
    /// A head has arrived and its body is being received.
    Body,
    /// Responses are owed or being written.
    Busy,
    /// The connection is closing.
    Closing,
}

#[derive(Debug)]
pub struct ConnState {
    /// Received bytes not yet framed (starts at the next request).
    read_buf: BytesMut,
    /// Response bytes in order, waiting for the socket.
    output: Output,
    framer: Framer,
    inflight: VecDeque<Slot>,
    /// Sequence number of `inflight[0]`; slot `i` is request `front_seq + i`.
    front_seq: u64,
    /// No more requests will be parsed: a response that closes the connection has
    /// been queued (error, `Connection: close`, HTTP/1.0, shutdown).
    closing: bool,
    /// `100 Continue` was sent for the request whose body is awaited.
    continue_sent: bool,
    /// Answer the next request with `Connection: close` (graceful shutdown).
    draining: bool,
    /// Draining for a successor (reload, recycling): an idle connection stays
    /// open for its next request, which is answered with `Connection: close`,
    /// rather than being closed under a client that may be sending it.
    gentle: bool,
    /// The client's address; none over a Unix socket.
    remote: Option<SocketAddr>,
    /// Requests framed so far (lets timers tell a new request from an old one).
    frames: u64,
    /// Over TLS, what the handshake settled (`tls.rs`); every job carries it.
    tls: Option<Arc<TlsInfo>>,
}

impl ConnState {
    pub fn new(remote: Option<SocketAddr>) -> ConnState {
        ConnState {
            read_buf: BytesMut::new(),
            output: Output::default(),
            framer: Framer::new(),
            inflight: VecDeque::new(),
            front_seq: 0,
            closing: false,
            continue_sent: false,
            draining: false,
            gentle: false,
            remote,
            frames: 0,
            tls: None,
        }
    }

    /// The connection is TLS: requests framed from now on carry `info`.
    pub fn set_tls(&mut self, info: Arc<TlsInfo>) {
        self.tls = Some(info);
    }

    /// The read buffer (taken from `pool` if the connection holds none), for a
    /// source other than a socket read to fill: TLS plaintext.
    pub fn input_buf(&mut self, pool: &mut BufPool) -> &mut BytesMut {
        pool.lend_read(&mut self.read_buf);
        &mut self.read_buf
    }

    /// Whether reading should pause: nothing more will be parsed, too many
    /// requests wait for Python, or the client is not taking its responses.
    pub fn read_blocked(&self, rules: &Rules<'_>) -> bool {
        self.closing
            || self.inflight.len() >= rules.max_pipelined
            || self.output.len() >= rules.max_write_buffer
    }

    /// Appends received bytes (what [`ConnState::read_from`] does with a socket).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.read_buf.extend_from_slice(bytes);
    }

    /// One `read()` from `fd` into the read buffer (taken from `pool` if the
    /// connection holds none).
    pub fn read_from(&mut self, fd: RawFd, pool: &mut BufPool) -> io::Result<ReadOutcome> {
        pool.lend_read(&mut self.read_buf);
        buffers::read_into(fd, &mut self.read_buf)
    }

    /// Makes sure the connection has a write buffer before responses are encoded.
    pub fn lend_buffers(&mut self, pool: &mut BufPool) {
        pool.lend_write(self.output.tail_mut());
    }

    /// Gives the buffers that are empty back to `pool`.
    pub fn recycle_buffers(&mut self, pool: &mut BufPool) {
        pool.recycle(&mut self.read_buf, self.output.tail_mut());
    }

    /// Response bytes ready to be written, in order.
    pub fn output(&self) -> &Output {
        &self.output
    }

    /// `n` bytes of [`ConnState::output`] were written.
    pub fn written(&mut self, n: usize) {
        self.output.advance(n);
    }

    /// Whether response bytes wait for the socket.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Whether received bytes wait to be framed.
    pub fn has_input(&self) -> bool {
        !self.read_buf.is_empty()
    }

    /// How many received bytes wait to be framed.
    pub fn input_len(&self) -> usize {
        self.read_buf.len()
    }

    /// Requests framed so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    pub fn phase(&self) -> Phase {
        if self.closing {
            Phase::Closing
        } else if !self.inflight.is_empty() || !self.output.is_empty() {
            Phase::Busy
        } else if self.framer.awaiting_body().is_some() {
            Phase::Body
        } else if !self.read_buf.is_empty() {
            Phase::Head
        } else {
            Phase::Idle
        }
    }

    /// A timer expired while receiving a request: answer 408 and close.
    pub fn time_out(&mut self) {
        self.read_buf.clear();
        self.answer(408, b"Request Timeout", Persist::Close, false);
        self.closing = true;
    }

    /// No more requests will be parsed on this connection.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Everything answered and written, and the connection should now close.
    pub fn finished(&self) -> bool {
        self.closing && self.inflight.is_empty() && self.output.is_empty()
    }

    /// Requests waiting for Python.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Starts a graceful close: idle connections finish at once; otherwise the next
    /// request parsed is the last one.
    pub fn drain(&mut self) {
        self.draining = true;
        self.settle_drain();
    }

    /// Starts a graceful close for a successor: the next request parsed is the
    /// last one, but an idle connection is left open for it (the reactor closes
    /// those that stay idle).
    pub fn drain_gently(&mut self) {
        self.draining = true;
        self.gentle = true;
    }

    /// The peer will send nothing more. A partial request is dropped; what is in
    /// flight is still answered.
    pub fn peer_closed(&mut self) {
        self.closing = true;
    }

    /// Frames every complete request in `read_buf`: requests for Python become jobs
    /// in `batch`, the rest are answered into the output (or queued behind earlier
    /// Python responses) right away.
    pub fn process(&mut self, rules: &Rules<'_>, me: ConnRef, batch: &mut Batch) {
        while !self.read_blocked(rules) && !self.read_buf.is_empty() {
            match self.framer.poll(&self.read_buf, rules.limits) {
                Ok(Progress::Complete(frame)) => {
                    self.frames += 1;
                    self.continue_sent = false;
                    self.dispatch(frame, rules, me, batch);
                }
                Ok(Progress::Partial) => {
                    self.maybe_continue();
                    break;
                }
                Err(e) => {
                    self.read_buf.clear();
                    self.reject(e);
                }
            }
        }
        self.settle_drain();
    }

    /// While draining, a connection with nothing left to answer is done.
    fn settle_drain(&mut self) {
        if self.draining && !self.gentle && self.inflight.is_empty() && self.read_buf.is_empty() {
            self.closing = true;
        }
    }

    fn dispatch(&mut self, frame: Frame, rules: &Rules<'_>, me: ConnRef, batch: &mut Batch) {
        let mut head = frame.head;
        if self.draining {
            head.keep_alive = false;
        }
        let close = !head.keep_alive;
        let route = rules
            .router
            .find_with_prefix(head.path_bytes(&self.read_buf));
        match route {
            Some((Route::Module(_), _)) if rules.shed => {
                self.answer_at_once(&frame, &head, 503, b"Service Unavailable")
            }
            Some((Route::Static(mount), prefix)) => {
                self.serve_static(&frame, &head, rules.mounts.get(mount as usize), prefix)
            }
            Some((Route::Module(route), _)) => {
                let data = self.read_buf.split_to(frame.len).freeze();
                let body = match frame.body {
                    Body::None => Bytes::new(),
                    Body::Fixed { start, end } => data.slice(start..end),
                    Body::Chunked {
                        start,
                        end,
                        decoded_len,
                    } => {
                        // decoded_len <= max_body: checked while scanning.
                        let mut decoded = Vec::with_capacity(decoded_len as usize);
                        let l = rules.limits;
                        match decode_chunked(
                            &data[start..end],
                            l.max_body,
                            l.max_head,
                            &mut decoded,
                        ) {
                            Ok(_) => Bytes::from(decoded),
                            Err(e) => {
                                // The scanner accepted these bytes, so decoding
                                // cannot fail; answer as any framing error if it does.
                                self.reject(e);
                                return;
                            }
                        }
                    }
                };
                let fields = batch.add_fields(self.framer.fields());
                batch.jobs.push(Job {
                    conn: me,
                    seq: self.front_seq + self.inflight.len() as u64,
                    route,
                    head,
                    fields,
                    data,
                    body,
                    remote: self.remote,
                    tls: self.tls.clone(),
                });
                self.inflight.push_back(Slot::PYTHON);
            }
            None => self.answer_at_once(&frame, &head, 404, b"Not Found"),
        }
        if close {
            self.closing = true;
        }
    }

    /// Answers a request for a static mount on the reactor, in order: straight
    /// into the output, or into a slot behind answers still owed by Python.
    /// `prefix` bytes of the path are the mount's route.
    fn serve_static(&mut self, frame: &Frame, head: &Head, mount: Option<&Mount>, prefix: usize) {
        let Some(mount) = mount else {
            self.answer_at_once(frame, head, 404, b"Not Found");
            return;
        };
        let path = head.path_bytes(&self.read_buf);
        let req = statics::FileRequest {
            method: head.method_kind,
            persist: Persist::of(head),
            path,
            query: head.query.get(&self.read_buf),
            rel: path.get(prefix..).unwrap_or_default(),
            fields: self.framer.fields(),
            buf: &self.read_buf,
        };
        if self.inflight.is_empty() {
            if let Some(file) = statics::answer(mount, &req, self.output.tail_mut()) {
                self.output.push_file(file);
            }
        } else {
            let mut out = BytesMut::new();
            let file = statics::answer(mount, &req, &mut out);
            self.inflight.push_back(Slot {
                ready: Some(out.freeze()),
                file,
            });
        }
        self.read_buf.advance(frame.len);
    }

    /// Answers a complete request on the reactor (no route, or shedding load) and
    /// drops its bytes.
    fn answer_at_once(&mut self, frame: &Frame, head: &Head, status: u16, body: &[u8]) {
        self.read_buf.advance(frame.len);
        self.answer(status, body, Persist::of(head), response::head_only(head));
    }

    /// Sends `100 Continue` once for a request that asked for it and whose body
    /// has not arrived, when it is that request's turn.
    fn maybe_continue(&mut self) {
        if self.continue_sent {
            return;
        }
        if let Some(head) = self.framer.awaiting_body() {
            if head.expect_continue {
                self.continue_sent = true;
                self.queue(Bytes::from_static(response::CONTINUE));
            }
        }
    }

    /// Answers a framing error and stops parsing; the connection closes once the
    /// answer is written.
    fn reject(&mut self, e: ParseError) {
        self.answer(e.status(), e.message().as_bytes(), Persist::Close, false);
        self.closing = true;
    }

    /// Encodes a reactor-made response in order.
    fn answer(&mut self, status: u16, body: &[u8], persist: Persist, head_only: bool) {
        if self.inflight.is_empty() {
            response::simple(
                self.output.tail_mut(),
                status,
                response::TEXT_PLAIN,
                body,
                persist,
                head_only,
            );
        } else {
            let mut out = BytesMut::new();
            response::simple(
                &mut out,
                status,
                response::TEXT_PLAIN,
                body,
                persist,
                head_only,
            );
            self.inflight.push_back(Slot::ready(out.freeze()));
        }
    }

    fn queue(&mut self, bytes: Bytes) {
        if self.inflight.is_empty() {
            self.output.push(bytes);
        } else {
            self.inflight.push_back(Slot::ready(bytes));
        }
    }

    /// Takes the Python response for request `seq`, then moves every response that
    /// is now in order into the output. Responses usually arrive in order and go
    /// straight to the output; one that overtakes an earlier request (an `async`
    /// handler finishing first) waits in its slot, sharing the reply's bytes.
    ///
    /// `reply[range]` is the response: shared (not copied) when it has to wait.
    pub fn on_reply(&mut self, seq: u64, reply: &Bytes, range: Range<usize>) {
        let Some(bytes) = reply.get(range.clone()) else {
            return;
        };
        let Some(index) = seq
            .checked_sub(self.front_seq)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < self.inflight.len())
        else {
            return;
        };
        if index > 0 {
            if let Some(slot) = self.inflight.get_mut(index) {
                if slot.ready.is_none() {
                    slot.ready = Some(reply.slice(range));
                }
            }
            return;
        }
        if self.inflight.front().is_some_and(|s| s.ready.is_some()) {
            // Already answered (cannot happen for a Python slot): keep order.
            return;
        }
        self.inflight.pop_front();
        self.front_seq += 1;
        if bytes.len() >= SHARE_MIN {
            self.output.push(reply.slice(range));
        } else {
            self.output.extend(bytes);
        }
        while let Some(Slot { ready: Some(_), .. }) = self.inflight.front() {
            if let Some(Slot {
                ready: Some(b),
                file,
            }) = self.inflight.pop_front()
            {
                self.front_seq += 1;
                self.output.push(b);
                if let Some(file) = file {
                    self.output.push_file(file);
                }
            }
        }
        self.settle_drain();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn parts() -> (Router, Limits) {
        (Router::new(["/py"]), Limits::default())
    }

    fn rules<'a>(router: &'a Router, limits: &'a Limits) -> Rules<'a> {
        Rules {
            router,
            mounts: &[],
            limits,
            max_pipelined: 64,
            max_write_buffer: 1 << 20,
            shed: false,
        }
    }

    fn conn() -> ConnState {
        ConnState::new(Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::LOCALHOST,
            1,
        ))))
    }

    const ME: ConnRef = ConnRef {
        key: 0,
        generation: 0,
    };

    fn statuses(out: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(out)
            .split("HTTP/1.1 ")
            .skip(1)
            .map(|s| s[..3].to_owned())
            .collect()
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

    /// Delivers `bytes` as the whole of a worker reply.
    fn reply(c: &mut ConnState, seq: u64, bytes: &'static [u8]) {
        c.on_reply(seq, &Bytes::from_static(bytes), 0..bytes.len());
    }

    #[test]
    fn reactor_answers_wait_behind_python_answers() {
        let (router, limits) = parts();
        let rules = rules(&router, &limits);
        let mut c = conn();
        let mut batch = Batch::default();
        c.feed(
            b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\nGET /py HTTP/1.1\r\nHost: h\r\n\r\nGET /no2 HTTP/1.1\r\nHost: h\r\n\r\n",
        );
        c.process(&rules, ME, &mut batch);
        assert_eq!(batch.jobs.len(), 1);
        assert_eq!(statuses(c.output().first()), vec!["404"]);
        reply(&mut c, batch.jobs[0].seq, OK);
        assert_eq!(statuses(c.output().first()), vec!["404", "200", "404"]);
        assert_eq!(c.inflight(), 0);
    }

    #[test]
    fn jobs_carry_their_header_fields() {
        let (router, limits) = parts();
        let rules = rules(&router, &limits);
        let mut c = conn();
        let mut batch = Batch::default();
        c.feed(b"GET /py HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\nGET /nope HTTP/1.1\r\nHost: n\r\n\r\nGET /py HTTP/1.1\r\nHost: h2\r\n\r\n");
        c.process(&rules, ME, &mut batch);
        let fields_of = |job: &Job| -> Vec<(Vec<u8>, Vec<u8>)> {
            batch.fields[job.fields.start as usize..job.fields.end as usize]
                .iter()
                .map(|f| {
                    (
                        f.name.get(&job.data).to_vec(),
                        f.value.get(&job.data).to_vec(),
                    )
                })
                .collect()
        };
        assert_eq!(
            fields_of(&batch.jobs[0]),
            vec![
                (b"Host".to_vec(), b"h".to_vec()),
                (b"X-A".to_vec(), b"1".to_vec())
            ]
        );
        // The 404 in between adds no fields.
        assert_eq!(
            fields_of(&batch.jobs[1]),
            vec![(b"Host".to_vec(), b"h2".to_vec())]
        );
        assert_eq!(batch.fields.len(), 3);
    }

    #[test]
    fn error_closes_after_earlier_answers() {
        let (router, limits) = parts();
        let rules = rules(&router, &limits);
        let mut c = conn();
        let mut batch = Batch::default();
        c.feed(b"GET /py HTTP/1.1\r\nHost: h\r\n\r\nBAD\x01 / HTTP/1.1\r\n\r\nGET /py HTTP/1.1\r\nHost: h\r\n\r\n");
        c.process(&rules, ME, &mut batch);
        assert_eq!(batch.jobs.len(), 1);
        assert!(c.is_closing());
        assert!(!c.has_output());
        reply(&mut c, batch.jobs[0].seq, OK);
        assert_eq!(statuses(c.output().first()), vec!["200", "400"]);
        assert!(!c.finished(), "responses are still unwritten");
        c.written(c.output().len());
        assert!(c.finished());
    }

    #[test]
    fn sends_continue_once_when_body_missing() {
        let (router, limits) = parts();
        let rules = rules(&router, &limits);
        let mut c = conn();
        let mut batch = Batch::default();
        c.feed(
            b"POST /py HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
        );
        c.process(&rules, ME, &mut batch);
        c.process(&rules, ME, &mut batch);
        assert_eq!(c.output().first(), response::CONTINUE);
        c.feed(b"hi");
        c.process(&rules, ME, &mut batch);
        assert_eq!(batch.jobs.len(), 1);
        assert_eq!(&batch.jobs[0].body[..], b"hi");
    }

    #[test]
    fn pipeline_stops_at_max_pipelined() {
        let (router, limits) = parts();
        let mut rules = rules(&router, &limits);
        rules.max_pipelined = 2;
        let mut c = conn();
        let mut batch = Batch::default();
        for _ in 0..5 {
            c.feed(b"GET /py HTTP/1.1\r\nHost: h\r\n\r\n");
        }
        c.process(&rules, ME, &mut batch);
        assert_eq!(batch.jobs.len(), 2);
        assert!(c.read_blocked(&rules));
        reply(&mut c, batch.jobs[0].seq, OK);
        c.process(&rules, ME, &mut batch);
        assert_eq!(batch.jobs.len(), 3);
    }

    #[test]
    fn out_of_order_replies_leave_in_request_order() {
        let (router, limits) = parts();
        let rules = rules(&router, &limits);
        let mut c = conn();
        let mut batch = Batch::default();
        c.feed(
            b"GET /py HTTP/1.1\r\nHost: h\r\n\r\nGET /no HTTP/1.1\r\nHost: h\r\n\r\n\
              GET /py HTTP/1.1\r\nHost: h\r\n\r\nGET /py HTTP/1.1\r\nHost: h\r\n\r\n",
        );
        c.process(&rules, ME, &mut batch);
        let jobs = &batch.jobs;
        assert_eq!(jobs.len(), 3);
        reply(&mut c, jobs[2].seq, b"HTTP/1.1 203 c\r\n\r\n");
        reply(&mut c, jobs[1].seq, b"HTTP/1.1 202 b\r\n\r\n");
        assert!(!c.has_output());
        reply(&mut c, jobs[0].seq, b"HTTP/1.1 201 a\r\n\r\n");
        assert_eq!(
            statuses(c.output().first()),
            vec!["201", "404", "202", "203"]
        );
        assert_eq!(c.inflight(), 0);
        // A stale or repeated reply is ignored.
        reply(&mut c, jobs[0].seq, b"HTTP/1.1 299 x\r\n\r\n");
        assert_eq!(statuses(c.output().first()).len(), 4);
    }

    #[test]
    fn large_replies_are_shared_not_copied() {
        let (router, limits) = parts();
        let rules = rules(&router, &limits);
        let mut c = conn();
        let mut batch = Batch::default();
        c.feed(b"GET /py HTTP/1.1\r\nHost: h\r\n\r\nGET /py HTTP/1.1\r\nHost: h\r\n\r\nGET /nope HTTP/1.1\r\nHost: h\r\n\r\n");
        c.process(&rules, ME, &mut batch);
        let mut big = b"HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n".to_vec();
        big.resize(big.len() + 65536, b'x');
        let big = Bytes::from(big);
        c.on_reply(batch.jobs[0].seq, &big, 0..big.len());
        // In order: the reply's own memory is queued, not a copy of it.
        assert_eq!(c.output().first().as_ptr(), big.as_ptr());
        // The small answer and the 404 after it are copied behind it, in order.
        reply(&mut c, batch.jobs[1].seq, OK);
        assert_eq!(c.output().len(), big.len() + OK.len() + not_found_len());
        let mut wire = Vec::new();
        while c.has_output() {
            let chunk = c.output().first().to_vec();
            wire.extend_from_slice(&chunk);
            c.written(chunk.len());
        }
        assert_eq!(&wire[..big.len()], &big[..]);
        assert_eq!(statuses(&wire[big.len()..]), vec!["200", "404"]);
    }

    /// Length of the reactor's 404 for a keep-alive GET.
    fn not_found_len() -> usize {
        let mut out = BytesMut::new();
        response::simple(
            &mut out,
            404,
            response::TEXT_PLAIN,
            b"Not Found",
            Persist::KeepAlive,
            false,
        );
        out.len()
    }

    #[test]
    fn static_answers_and_their_files_wait_behind_python_answers() {
        let dir = std::env::temp_dir().join(format!("pyrs-conn-static-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let big = vec![b'b'; statics::INLINE_MAX as usize + 1];
        std::fs::write(dir.join("big"), &big).expect("write");
        std::fs::write(dir.join("small"), b"small").expect("write");
        let entry = crate::config::StaticEntry {
            path: "/s/*".into(),
            dir: dir.clone(),
            max_age: None,
            index: None,
            precompressed: false,
            location: crate::config::Location { line: 1, column: 1 },
            path_at: crate::config::Location { line: 1, column: 1 },
        };
        let mounts = [Mount::open(&entry).expect("open mount")];
        let router = Router::with_static(["/py"], ["/s/*"]);
        let limits = Limits::default();
        let mut rules = rules(&router, &limits);
        rules.mounts = &mounts;
        let mut c = conn();
        let mut batch = Batch::default();
        c.feed(
            b"GET /s/big HTTP/1.1\r\nHost: h\r\n\r\nGET /py HTTP/1.1\r\nHost: h\r\n\r\n\
                 GET /s/big HTTP/1.1\r\nHost: h\r\n\r\nGET /s/small HTTP/1.1\r\nHost: h\r\n\r\n",
        );
        c.process(&rules, ME, &mut batch);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(batch.jobs.len(), 1);
        // Only the first file is out; the second waits behind the Python slot.
        let first = c.output.drain_for_test();
        assert!(first.ends_with(&big));
        assert_eq!(statuses(&first), vec!["200"]);
        reply(&mut c, batch.jobs[0].seq, OK);
        let rest = c.output.drain_for_test();
        let text = String::from_utf8_lossy(&rest);
        assert_eq!(statuses(&rest), vec!["200", "200", "200"]);
        let big_at = text.find(&"b".repeat(big.len())).expect("the big file");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200"));
        assert!(text[big_at..].ends_with("\r\n\r\nsmall"), "{text}");
    }

    #[test]
    fn shed_answers_503_without_python() {
        let (router, limits) = parts();
        let mut rules = rules(&router, &limits);
        rules.shed = true;
        let mut c = conn();
        let mut batch = Batch::default();
        c.feed(b"GET /py HTTP/1.1\r\nHost: h\r\n\r\n");
        c.process(&rules, ME, &mut batch);
        assert!(batch.is_empty());
        assert_eq!(statuses(c.output().first()), vec!["503"]);
        assert!(!c.is_closing());
    }

    #[test]
    fn timeout_answers_408_and_closes() {
        let (router, limits) = parts();
        let rules = rules(&router, &limits);
        let mut c = conn();
        let mut batch = Batch::default();
        c.feed(b"GET /py HTTP/1.1\r\nHo");
        c.process(&rules, ME, &mut batch);
        assert_eq!(c.phase(), Phase::Head);
        c.time_out();
        assert_eq!(statuses(c.output().first()), vec!["408"]);
        assert_eq!(c.phase(), Phase::Closing);
    }

    #[test]
    fn http10_without_keep_alive_closes() {
        let (router, limits) = parts();
        let rules = rules(&router, &limits);
        let mut c = conn();
        let mut batch = Batch::default();
        c.feed(b"GET /x HTTP/1.0\r\n\r\nGET /y HTTP/1.0\r\n\r\n");
        c.process(&rules, ME, &mut batch);
        // One answer, which closes: the second request is never parsed.
        assert_eq!(statuses(c.output().first()), vec!["404"]);
        assert!(String::from_utf8_lossy(c.output().first()).contains("\r\nConnection: close\r\n"));
        assert!(c.is_closing());
        assert!(c.has_input(), "the second request stays unparsed");
        assert!(!c.finished(), "the 404 is not written yet");
        c.written(c.output().len());
        assert!(c.finished());
        c.process(&rules, ME, &mut batch);
        assert!(!c.has_output() && batch.is_empty());
    }
}
