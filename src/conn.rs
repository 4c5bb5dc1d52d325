//! One connection's HTTP state, without the socket: read and write buffers, the
//! framer, and the queue that keeps responses in request order when some are
//! answered at once by the reactor (404, 400, static files, ...) and others later
//! by Python. Owned and run by the connection's reactor thread; also driven
//! directly by tests and fuzz targets (bytes in, response bytes out). Each request
//! is noted by the reactor's [`Tap`] when framed and when its answer enters the
//! output, in request order (access log, metrics). A body too large to wait for
//! (past [`STREAM_THRESHOLD`], for a WSGI or ASGI route) is not buffered: its
//! job goes to the worker as soon as the head is in, and the body follows as it
//! is read, through the job's [`Upload`] (`upload.rs`); reading pauses while the
//! app is behind, and the next request is parsed only after the body's end.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::RawFd;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use pyrs_parser::{
    decode_chunked, Body, BodyStream, Field, Frame, Framer, Head, Limits, ParseError, Progress,
};

use crate::buffers::{self, BufPool, ReadOutcome};
use crate::dispatch::{Batch, ConnRef, Flow, Job, Part};
use crate::output::{FileSlice, Output, SHARE_MIN};
use crate::response::{self, Persist};
use crate::router::{Route, Router};
use crate::statics::{self, Mount};
use crate::tap::{Pending, RequestView, Sent, Tap};
use crate::tls::TlsInfo;
use crate::upload::{End, Upload, UploadLink, Uploads, STREAM_THRESHOLD};

/// Bytes of an abandoned upload (the app answered without reading it all) read
/// and dropped to reach the next request; past this the connection closes
/// instead, after the answers owed.
const MAX_DRAIN: u64 = 16 * 1024 * 1024;
/// While a body streams to its app, each read asks for at least this much
/// room (a read buffer's usual 16 KiB would make a gigabyte 65536 pieces).
const UPLOAD_READ: usize = 256 * 1024;

/// A response slot in request order. Python slots start empty; reactor answers
/// queued behind a Python slot carry their bytes, and a static file's body
/// waits here with its head until every earlier answer has gone to the output.
/// A streamed response (one that arrives in parts) lives in its slot until its
/// last part: parts go straight to the output while it is first in line, and
/// wait in the slot behind an earlier response still owed.
#[derive(Debug)]
struct Slot {
    ready: Option<Bytes>,
    file: Option<FileSlice>,
    /// What the access log and metrics note when this answer goes out; `None`
    /// for an interim `100 Continue`, which answers no request.
    sent: Option<Sent>,
    stream: Option<Box<Streamed>>,
}

impl Slot {
    const PYTHON: Slot = Slot {
        ready: None,
        file: None,
        sent: None,
        stream: None,
    };

    fn ready(bytes: Bytes, sent: Option<Sent>) -> Slot {
        Slot {
            ready: Some(bytes),
            file: None,
            sent,
            stream: None,
        }
    }
}

/// Where a streamed response stands.
#[derive(Debug, Default)]
struct Streamed {
    /// Parts that arrived while an earlier response was still owed.
    waiting: BytesMut,
    /// `Last` or `Close`, once the final part arrived.
    end: Option<Part>,
    flow: Option<FlowLink>,
    /// Bytes of this response moved into the output so far.
    delivered: usize,
    /// What the access log and metrics note when it ends: the status from its
    /// first part, and the body bytes so far.
    sent: Option<Sent>,
}

/// The reactor's hold on a streamed response's [`Flow`]: dropped with its slot
/// (the response ended) or with the connection (the client left), it hangs up,
/// which stops the producer.
#[derive(Debug)]
struct FlowLink(Arc<Flow>);

impl Drop for FlowLink {
    fn drop(&mut self) {
        self.0.hang_up();
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
    /// Where large bodies go as they arrive (none: every body is buffered whole).
    pub uploads: Option<&'a Uploads>,
}

/// A request body on its way to the app as it arrives (see `upload.rs`).
#[derive(Debug)]
struct Inbound {
    link: UploadLink,
    body: BodyStream,
    /// The request's sequence number (its slot in `inflight` while owed).
    seq: u64,
    /// Bytes dropped since the app abandoned it.
    drained: u64,
    /// Data ranges of the bytes being consumed (reused for every read).
    ranges: Vec<Range<usize>>,
    /// The reactor last found the upload full and stopped reading: the app,
    /// not the client, holds the body up (no `body_timeout` then). Reactor
    /// state only, so the sweep never races the app's consumption report.
    held: std::cell::Cell<bool>,
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
    /// Requests noted by the [`Tap`] whose answers are not out yet.
    pending: Pending,
    /// A WebSocket upgrade was sent to Python: nothing more is parsed until it is
    /// accepted (the connection becomes a WebSocket) or refused (it closes).
    upgrading: bool,
    /// Over TLS, what the handshake settled (`tls.rs`); every job carries it.
    tls: Option<Arc<TlsInfo>>,
    /// The body of the last request framed, streaming to its app: what is read
    /// goes there until it ends, and only then is the next request parsed.
    inbound: Option<Box<Inbound>>,
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
            pending: Pending::default(),
            upgrading: false,
            tls: None,
            inbound: None,
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
        self.make_upload_room();
        &mut self.read_buf
    }

    /// While a body streams, reads go into room of [`UPLOAD_READ`] (the pieces
    /// before it are shared with the app, so this is a new buffer).
    fn make_upload_room(&mut self) {
        if self.inbound.is_some() && self.read_buf.capacity() - self.read_buf.len() < UPLOAD_READ {
            self.read_buf.reserve(UPLOAD_READ);
        }
    }

    /// Whether reading should pause: nothing more will be parsed, too many
    /// requests wait for Python, or the client is not taking its responses.
    pub fn read_blocked(&self, rules: &Rules<'_>) -> bool {
        if let Some(inbound) = &self.inbound {
            // A streamed body is read while its app takes it, whatever else.
            let held = inbound.link.0.stop_reading();
            inbound.held.set(held);
            return held;
        }
        self.closing
            || self.upgrading
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
        self.make_upload_room();
        buffers::read_into(fd, &mut self.read_buf)
    }

    /// Makes sure the connection has a write buffer before responses are encoded.
    pub fn lend_buffers(&mut self, pool: &mut BufPool) {
        pool.lend_write(self.output.tail_mut());
        pool.lend_pending(&mut self.pending);
    }

    /// Gives the buffers that are empty back to `pool`.
    pub fn recycle_buffers(&mut self, pool: &mut BufPool) {
        pool.recycle(&mut self.read_buf, self.output.tail_mut());
        pool.recycle_pending(&mut self.pending);
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
        if self.inbound.as_ref().is_some_and(|i| !i.held.get()) {
            // A streamed body is due from the client (not held up by its app),
            // also on a connection that closes after it: body_timeout applies.
            Phase::Body
        } else if self.closing {
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
    pub fn time_out(&mut self, tap: &mut Tap) {
        if self.inbound.is_some() {
            self.fail_upload(408, b"Request Timeout", tap);
            return;
        }
        self.read_buf.clear();
        tap.begin(&mut self.pending, None, self.remote);
        self.answer(408, b"Request Timeout", Persist::Close, false, tap);
        self.closing = true;
    }

    /// A request body is streaming to its app.
    pub fn is_uploading(&self) -> bool {
        self.inbound.is_some()
    }

    /// No more requests will be parsed on this connection.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Everything answered and written, and the connection should now close.
    pub fn finished(&self) -> bool {
        self.closing && self.inflight.is_empty() && self.output.is_empty()
    }

    /// A WebSocket upgrade waits for the app's answer.
    pub fn is_upgrading(&self) -> bool {
        self.upgrading
    }

    /// The app refused the upgrade (its response says `Connection: close`).
    pub fn refuse_upgrade(&mut self) {
        self.upgrading = false;
        self.closing = true;
    }

    /// The upgrade is done: the bytes received after the upgrade request (the
    /// client's first WebSocket frames), for the WebSocket to take over.
    pub fn take_input(&mut self) -> BytesMut {
        self.upgrading = false;
        self.read_buf.split()
    }

    /// Appends bytes to the output (WebSocket frames, once upgraded).
    pub fn push_output(&mut self, bytes: &[u8]) {
        self.output.extend(bytes);
    }

    /// Response bytes waiting for the socket.
    pub fn output_len(&self) -> usize {
        self.output.len()
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
        // A body cut short: its app hears that the client is gone.
        self.inbound = None;
    }

    /// Frames every complete request in `read_buf`: requests for Python become jobs
    /// in `batch`, the rest are answered into the output (or queued behind earlier
    /// Python responses) right away.
    /// Each request is noted by `tap` when framed and when answered.
    pub fn process(&mut self, rules: &Rules<'_>, me: ConnRef, batch: &mut Batch, tap: &mut Tap) {
        while !self.read_blocked(rules) && !self.read_buf.is_empty() {
            if self.inbound.is_some() {
                if self.feed_upload(rules, tap) {
                    continue;
                }
                break;
            }
            match self.framer.poll(&self.read_buf, rules.limits) {
                Ok(Progress::Complete(frame)) => {
                    self.frames += 1;
                    self.continue_sent = false;
                    self.dispatch(frame, rules, me, batch, tap);
                }
                Ok(Progress::Partial) => {
                    self.maybe_continue();
                    if self.stream_body(rules, me, batch, tap) {
                        continue;
                    }
                    break;
                }
                Err(e) => {
                    self.read_buf.clear();
                    tap.begin(&mut self.pending, None, self.remote);
                    self.reject(e, tap);
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

    /// Hands the body of the request whose head just arrived to its app as it
    /// arrives, when it is large (past [`STREAM_THRESHOLD`]) and its route is a
    /// WSGI or ASGI app: the job goes to the worker now, with an [`Upload`] the
    /// body follows through. `false` leaves the request to be buffered whole.
    fn stream_body(
        &mut self,
        rules: &Rules<'_>,
        me: ConnRef,
        batch: &mut Batch,
        tap: &mut Tap,
    ) -> bool {
        let Some(uploads) = rules.uploads else {
            return false;
        };
        if rules.shed
            || self
                .framer
                .body_size_hint(self.read_buf.len())
                .is_none_or(|n| n <= STREAM_THRESHOLD)
        {
            return false;
        }
        let Some(head) = self.framer.awaiting_body() else {
            return false;
        };
        let streams = match rules
            .router
            .find_with_prefix(head.path_bytes(&self.read_buf))
        {
            Some((Route::Module(route), _)) => uploads.streams(route),
            _ => false,
        };
        if !streams || is_websocket_upgrade(head, self.framer.fields(), &self.read_buf) {
            return false;
        }
        let Some((head, body)) = self.framer.stream_body() else {
            return false;
        };
        let seq = self.front_seq + self.inflight.len() as u64;
        let upload = Arc::new(Upload::new(uploads, me, seq));
        self.frames += 1;
        self.continue_sent = false;
        let jobs = batch.jobs.len();
        let frame = Frame {
            head,
            body: Body::None,
            len: head.len,
        };
        self.dispatch(frame, rules, me, batch, tap);
        match batch.jobs.get_mut(jobs) {
            Some(job) if job.seq == seq => job.upload = Some(upload.clone()),
            // The reactor answered it itself (shed, say): its body follows the
            // head we already took, so nothing more may be parsed here.
            _ => {
                self.read_buf.clear();
                self.closing = true;
                return true;
            }
        }
        self.inbound = Some(Box::new(Inbound {
            link: UploadLink(upload),
            body,
            seq,
            drained: 0,
            ranges: Vec::new(),
            held: std::cell::Cell::new(false),
        }));
        true
    }

    /// Passes what has arrived of a streamed body to its upload (dropped, once
    /// the app abandoned it); at its end the connection goes on with the next
    /// request. `false` when nothing could be consumed (more must be read).
    fn feed_upload(&mut self, rules: &Rules<'_>, tap: &mut Tap) -> bool {
        let Some(inbound) = self.inbound.as_mut() else {
            return false;
        };
        inbound.ranges.clear();
        let ranges = &mut inbound.ranges;
        let decoded = inbound
            .body
            .decode(&self.read_buf, rules.limits, &mut |r| ranges.push(r));
        let decoded = match decoded {
            Ok(d) => d,
            Err(e) => {
                self.fail_upload(e.status(), e.message().as_bytes(), tap);
                return false;
            }
        };
        let arrived: usize = inbound.ranges.iter().map(|r| r.len()).sum();
        tap.add_body(&mut self.pending, arrived as u64);
        let upload = &inbound.link.0;
        if upload.is_abandoned() {
            self.read_buf.advance(decoded.consumed);
            inbound.drained += decoded.consumed as u64;
            if inbound.drained > MAX_DRAIN && !decoded.done {
                // Not worth reading: close once the answers owed are out
                // (an app still reading hears the body was cut short).
                upload.end(End::Gone);
                self.inbound = None;
                self.read_buf.clear();
                self.closing = true;
                return false;
            }
        } else {
            let piece = self.read_buf.split_to(decoded.consumed).freeze();
            match inbound.ranges.as_slice() {
                [] => {}
                // A Content-Length body, or a chunk spanning the read: shared.
                [one] => upload.push(piece.slice(one.clone())),
                // Small chunks are copied into one piece, so that what the
                // upload holds is the data (not the chunk lines around it),
                // in one entry per read.
                many => {
                    let len = many.iter().map(|r| r.len()).sum();
                    let mut joined = BytesMut::with_capacity(len);
                    for r in many {
                        joined.extend_from_slice(&piece[r.clone()]);
                    }
                    upload.push(joined.freeze());
                }
            }
        }
        if decoded.done {
            upload.end(End::Complete);
            self.inbound = None;
            self.settle_drain();
            return true;
        }
        decoded.consumed > 0
    }

    /// A streamed body will not arrive (framing error, timeout): its app hears
    /// the client is gone, the request is answered `status` in place of what
    /// the app answers (unless its answer has begun), and the connection
    /// closes.
    fn fail_upload(&mut self, status: u16, message: &[u8], tap: &mut Tap) {
        let Some(inbound) = self.inbound.take() else {
            return;
        };
        self.read_buf.clear();
        self.closing = true;
        let index = inbound
            .seq
            .checked_sub(self.front_seq)
            .and_then(|i| usize::try_from(i).ok());
        let Some(slot) = index.and_then(|i| self.inflight.get_mut(i)) else {
            return;
        };
        if slot.ready.is_some() || slot.stream.is_some() {
            return;
        }
        let mut out = BytesMut::new();
        response::simple(
            &mut out,
            status,
            response::TEXT_PLAIN,
            message,
            Persist::Close,
            false,
        );
        slot.ready = Some(out.freeze());
        slot.sent = Some(Sent {
            status,
            body: message.len() as u64,
        });
        if index == Some(0) {
            self.advance_front(tap);
        }
    }

    fn dispatch(
        &mut self,
        frame: Frame,
        rules: &Rules<'_>,
        me: ConnRef,
        batch: &mut Batch,
        tap: &mut Tap,
    ) {
        let mut head = frame.head;
        if self.draining {
            head.keep_alive = false;
        }
        if tap.is_on() {
            let body_len = match frame.body {
                Body::None => 0,
                Body::Fixed { start, end } => (end - start) as u64,
                Body::Chunked { decoded_len, .. } => decoded_len,
            };
            let view = RequestView {
                head: &head,
                fields: self.framer.fields(),
                buf: &self.read_buf,
                body_len,
            };
            tap.begin(&mut self.pending, Some(view), self.remote);
        }
        let close = !head.keep_alive;
        let route = rules
            .router
            .find_with_prefix(head.path_bytes(&self.read_buf));
        match route {
            Some((Route::Module(_), _)) if rules.shed => {
                self.answer_at_once(&frame, &head, 503, b"Service Unavailable", tap)
            }
            Some((Route::Static(mount), prefix)) => {
                self.serve_static(&frame, &head, rules.mounts.get(mount as usize), prefix, tap)
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
                                self.reject(e, tap);
                                return;
                            }
                        }
                    }
                };
                let websocket = is_websocket_upgrade(&head, self.framer.fields(), &data);
                if websocket {
                    // Nothing pipelined behind an upgrade is a request.
                    self.upgrading = true;
                }
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
                    websocket,
                    tls: self.tls.clone(),
                    upload: None,
                });
                self.inflight.push_back(Slot::PYTHON);
            }
            None => self.answer_at_once(&frame, &head, 404, b"Not Found", tap),
        }
        if close {
            self.closing = true;
        }
    }

    /// Answers a request for a static mount on the reactor, in order: straight
    /// into the output, or into a slot behind answers still owed by Python.
    /// `prefix` bytes of the path are the mount's route.
    fn serve_static(
        &mut self,
        frame: &Frame,
        head: &Head,
        mount: Option<&Mount>,
        prefix: usize,
        tap: &mut Tap,
    ) {
        let Some(mount) = mount else {
            self.answer_at_once(frame, head, 404, b"Not Found", tap);
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
            let before = self.output.tail_mut().len();
            let file = statics::answer(mount, &req, self.output.tail_mut());
            if tap.is_on() {
                let written = self.output.tail_mut().get(before..).unwrap_or_default();
                let sent = Sent::of_encoded(written, file.as_ref().map_or(0, FileSlice::len));
                tap.end(&mut self.pending, sent);
            }
            if let Some(file) = file {
                self.output.push_file(file);
            }
        } else {
            let mut out = BytesMut::new();
            let file = statics::answer(mount, &req, &mut out);
            let sent = Sent::of_encoded(&out, file.as_ref().map_or(0, FileSlice::len));
            self.inflight.push_back(Slot {
                ready: Some(out.freeze()),
                file,
                sent: Some(sent),
                stream: None,
            });
        }
        self.read_buf.advance(frame.len);
    }

    /// Answers a complete request on the reactor (no route, or shedding load) and
    /// drops its bytes.
    fn answer_at_once(
        &mut self,
        frame: &Frame,
        head: &Head,
        status: u16,
        body: &[u8],
        tap: &mut Tap,
    ) {
        self.read_buf.advance(frame.len);
        let head_only = response::head_only(head);
        self.answer(status, body, Persist::of(head), head_only, tap);
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
                self.queue_interim(Bytes::from_static(response::CONTINUE));
            }
        }
    }

    /// Answers a framing error and stops parsing; the connection closes once the
    /// answer is written.
    /// Its request was noted by the tap already.
    fn reject(&mut self, e: ParseError, tap: &mut Tap) {
        self.answer(
            e.status(),
            e.message().as_bytes(),
            Persist::Close,
            false,
            tap,
        );
        self.closing = true;
    }

    /// Encodes a reactor-made response in order (its request was noted by the
    /// tap already).
    fn answer(
        &mut self,
        status: u16,
        body: &[u8],
        persist: Persist,
        head_only: bool,
        tap: &mut Tap,
    ) {
        let sent = Sent {
            status,
            body: if head_only || !response::status_has_body(status) {
                0
            } else {
                body.len() as u64
            },
        };
        if self.inflight.is_empty() {
            tap.end(&mut self.pending, sent);
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
            self.inflight
                .push_back(Slot::ready(out.freeze(), Some(sent)));
        }
    }

    /// Queues an interim response (no request's answer) in order.
    fn queue_interim(&mut self, bytes: Bytes) {
        if self.inflight.is_empty() {
            self.output.push(bytes);
        } else {
            self.inflight.push_back(Slot::ready(bytes, None));
        }
    }

    /// Takes the Python response for request `seq`, then moves every response that
    /// is now in order into the output. Responses usually arrive in order and go
    /// straight to the output; one that overtakes an earlier request (an `async`
    /// handler finishing first) waits in its slot, sharing the reply's bytes.
    ///
    /// `reply[range]` is the response: shared (not copied) when it has to wait.
    pub fn on_reply(&mut self, seq: u64, reply: &Bytes, range: Range<usize>, tap: &mut Tap) {
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
                    slot.sent = Some(Sent::of_encoded(bytes, 0));
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
        if tap.is_on() {
            tap.end(&mut self.pending, Sent::of_encoded(bytes, 0));
        }
        if bytes.len() >= SHARE_MIN {
            self.output.push(reply.slice(range));
        } else {
            self.output.extend(bytes);
        }
        if !self.inflight.is_empty() {
            self.advance_front(tap);
        }
        self.settle_drain();
    }

    /// Takes one part of the streamed response for request `seq` (`part` is
    /// not [`Part::Whole`]): written at once when the response is first in line,
    /// kept in its slot otherwise. `flow` comes with each part; the slot keeps
    /// the first. A part for a request no longer owed hangs up its flow.
    pub fn on_part(
        &mut self,
        seq: u64,
        reply: &Bytes,
        range: Range<usize>,
        part: Part,
        flow: Option<&Arc<Flow>>,
        tap: &mut Tap,
    ) {
        let hang_up = || {
            if let Some(f) = flow {
                f.hang_up();
            }
        };
        let (Some(bytes), Some(index)) = (
            reply.get(range.clone()),
            seq.checked_sub(self.front_seq)
                .and_then(|i| usize::try_from(i).ok())
                .filter(|&i| i < self.inflight.len()),
        ) else {
            return hang_up();
        };
        let Some(slot) = self.inflight.get_mut(index) else {
            return hang_up();
        };
        if slot.ready.is_some() {
            return hang_up();
        }
        let s = slot.stream.get_or_insert_with(Box::default);
        if s.end.is_some() {
            return hang_up();
        }
        if s.flow.is_none() {
            s.flow = flow.map(|f| FlowLink(f.clone()));
        }
        match &mut s.sent {
            // The first part holds the head.
            None => s.sent = Some(Sent::of_encoded(bytes, 0)),
            Some(sent) => sent.body += bytes.len() as u64,
        }
        if part != Part::More {
            s.end = Some(part);
        }
        if index == 0 && s.waiting.is_empty() {
            s.delivered += bytes.len();
            if bytes.len() >= SHARE_MIN {
                self.output.push(reply.slice(range));
            } else {
                self.output.extend(bytes);
            }
        } else {
            s.waiting.extend_from_slice(bytes);
        }
        if index == 0 && s.end.is_some() {
            self.advance_front(tap);
        }
        self.settle_drain();
    }

    /// Moves every response now first in line into the output, in order: whole
    /// answers (and their files), and what a streamed one has sent so far.
    /// Stops at a response still owed, or at a streamed one still running.
    fn advance_front(&mut self, tap: &mut Tap) {
        while let Some(front) = self.inflight.front_mut() {
            if let Some(s) = &mut front.stream {
                if !s.waiting.is_empty() {
                    let parts = s.waiting.split().freeze();
                    s.delivered += parts.len();
                    self.output.push(parts);
                }
                let Some(end) = s.end else {
                    break;
                };
                if let Some(sent) = s.sent.take() {
                    tap.end(&mut self.pending, sent);
                }
                self.inflight.pop_front();
                self.front_seq += 1;
                if end == Part::Close {
                    // The body ended with the connection (or was cut short):
                    // nothing may follow it.
                    self.inflight.clear();
                    self.inbound = None;
                    self.read_buf.clear();
                    self.closing = true;
                    break;
                }
                continue;
            }
            if front.ready.is_none() {
                break;
            }
            if let Some(Slot {
                ready: Some(b),
                file,
                sent,
                ..
            }) = self.inflight.pop_front()
            {
                self.front_seq += 1;
                if let Some(sent) = sent {
                    tap.end(&mut self.pending, sent);
                }
                self.output.push(b);
                if let Some(file) = file {
                    self.output.push_file(file);
                }
            }
        }
    }

    /// Tells the producer of the streamed response being written how much of it
    /// the socket has taken (its bytes are the output's last).
    pub fn report_flow(&self) {
        if let Some(Slot {
            stream: Some(s), ..
        }) = self.inflight.front()
        {
            if let Some(link) = &s.flow {
                link.0
                    .written(s.delivered - self.output.len().min(s.delivered));
            }
        }
    }

    /// Whether a streamed response is under way (started, not ended).
    pub fn streaming(&self) -> bool {
        self.inflight
            .iter()
            .any(|s| s.stream.as_ref().is_some_and(|s| s.end.is_none()))
    }
}

/// A `GET` asking to become a WebSocket (RFC 6455 section 4.1): `Upgrade:
/// websocket` and a `Sec-WebSocket-Key`. Whether the app takes it is the app's
/// call; this only decides that the connection waits for that answer.
fn is_websocket_upgrade(head: &Head, fields: &[Field], data: &[u8]) -> bool {
    if head.method.get(data) != b"GET" {
        return false;
    }
    let mut upgrade = false;
    let mut key = false;
    for f in fields {
        let name = f.name.get(data);
        if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade |= f
                .value
                .get(data)
                .split(|&b| b == b',')
                .any(|v| v.trim_ascii().eq_ignore_ascii_case(b"websocket"));
        } else if name.eq_ignore_ascii_case(b"sec-websocket-key") {
            key = true;
        }
    }
    upgrade && key
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn parts() -> (Router, Limits) {
        (Router::new(["/py"]), Limits::default())
    }

    /// Most tests' setup: the default rules (one Python route, `/py`), a
    /// connection and a batch, as the locals named.
    macro_rules! fixture {
        ($rules:ident, $c:ident, $batch:ident) => {
            let (router, limits) = parts();
            let $rules = rules(&router, &limits);
            let mut $c = conn();
            let mut $batch = Batch::default();
        };
    }

    fn rules<'a>(router: &'a Router, limits: &'a Limits) -> Rules<'a> {
        Rules {
            router,
            mounts: &[],
            limits,
            max_pipelined: 64,
            max_write_buffer: 1 << 20,
            shed: false,
            uploads: None,
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
        c.on_reply(
            seq,
            &Bytes::from_static(bytes),
            0..bytes.len(),
            &mut Tap::off(),
        );
    }

    #[test]
    fn reactor_answers_wait_behind_python_answers() {
        fixture!(rules, c, batch);
        c.feed(
            b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\nGET /py HTTP/1.1\r\nHost: h\r\n\r\nGET /no2 HTTP/1.1\r\nHost: h\r\n\r\n",
        );
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        assert_eq!(batch.jobs.len(), 1);
        assert_eq!(statuses(c.output().first()), vec!["404"]);
        reply(&mut c, batch.jobs[0].seq, OK);
        assert_eq!(statuses(c.output().first()), vec!["404", "200", "404"]);
        assert_eq!(c.inflight(), 0);
    }

    #[test]
    fn jobs_carry_their_header_fields() {
        fixture!(rules, c, batch);
        c.feed(b"GET /py HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\nGET /nope HTTP/1.1\r\nHost: n\r\n\r\nGET /py HTTP/1.1\r\nHost: h2\r\n\r\n");
        c.process(&rules, ME, &mut batch, &mut Tap::off());
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
        fixture!(rules, c, batch);
        c.feed(b"GET /py HTTP/1.1\r\nHost: h\r\n\r\nBAD\x01 / HTTP/1.1\r\n\r\nGET /py HTTP/1.1\r\nHost: h\r\n\r\n");
        c.process(&rules, ME, &mut batch, &mut Tap::off());
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
        fixture!(rules, c, batch);
        c.feed(
            b"POST /py HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
        );
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        assert_eq!(c.output().first(), response::CONTINUE);
        c.feed(b"hi");
        c.process(&rules, ME, &mut batch, &mut Tap::off());
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
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        assert_eq!(batch.jobs.len(), 2);
        assert!(c.read_blocked(&rules));
        reply(&mut c, batch.jobs[0].seq, OK);
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        assert_eq!(batch.jobs.len(), 3);
    }

    #[test]
    fn out_of_order_replies_leave_in_request_order() {
        fixture!(rules, c, batch);
        c.feed(
            b"GET /py HTTP/1.1\r\nHost: h\r\n\r\nGET /no HTTP/1.1\r\nHost: h\r\n\r\n\
              GET /py HTTP/1.1\r\nHost: h\r\n\r\nGET /py HTTP/1.1\r\nHost: h\r\n\r\n",
        );
        c.process(&rules, ME, &mut batch, &mut Tap::off());
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
        fixture!(rules, c, batch);
        c.feed(b"GET /py HTTP/1.1\r\nHost: h\r\n\r\nGET /py HTTP/1.1\r\nHost: h\r\n\r\nGET /nope HTTP/1.1\r\nHost: h\r\n\r\n");
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        let mut big = b"HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n".to_vec();
        big.resize(big.len() + 65536, b'x');
        let big = Bytes::from(big);
        c.on_reply(batch.jobs[0].seq, &big, 0..big.len(), &mut Tap::off());
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
        c.process(&rules, ME, &mut batch, &mut Tap::off());
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
    fn pending_records_go_back_to_the_pool() {
        let (router, limits) = parts();
        let rules = rules(&router, &limits);
        let format = crate::access_log::Format::parse("$status").expect("format");
        let dest = crate::config::AccessLog::File("/dev/null".into());
        let log = crate::access_log::AccessLog::start(&dest, format, 0)
            .expect("open /dev/null")
            .expect("a log");
        let mut tap = Tap::new(Some(log.sink()), None);
        let mut pool = BufPool::default();
        let mut batch = Batch::default();
        let mut c = conn();
        c.lend_buffers(&mut pool);
        c.feed(b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n");
        c.process(&rules, ME, &mut batch, &mut tap);
        assert!(c.pending.is_empty() && c.pending.has_memory());
        c.recycle_buffers(&mut pool);
        assert!(!c.pending.has_memory());
        // The next connection's first request reuses that memory.
        let mut next = conn();
        next.lend_buffers(&mut pool);
        assert!(next.pending.has_memory());
    }

    #[test]
    fn shed_answers_503_without_python() {
        let (router, limits) = parts();
        let mut rules = rules(&router, &limits);
        rules.shed = true;
        let mut c = conn();
        let mut batch = Batch::default();
        c.feed(b"GET /py HTTP/1.1\r\nHost: h\r\n\r\n");
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        assert!(batch.is_empty());
        assert_eq!(statuses(c.output().first()), vec!["503"]);
        assert!(!c.is_closing());
    }

    #[test]
    fn timeout_answers_408_and_closes() {
        fixture!(rules, c, batch);
        c.feed(b"GET /py HTTP/1.1\r\nHo");
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        assert_eq!(c.phase(), Phase::Head);
        c.time_out(&mut Tap::off());
        assert_eq!(statuses(c.output().first()), vec!["408"]);
        assert_eq!(c.phase(), Phase::Closing);
    }

    #[test]
    fn http10_without_keep_alive_closes() {
        fixture!(rules, c, batch);
        c.feed(b"GET /x HTTP/1.0\r\n\r\nGET /y HTTP/1.0\r\n\r\n");
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        // One answer, which closes: the second request is never parsed.
        assert_eq!(statuses(c.output().first()), vec!["404"]);
        assert!(String::from_utf8_lossy(c.output().first()).contains("\r\nConnection: close\r\n"));
        assert!(c.is_closing());
        assert!(c.has_input(), "the second request stays unparsed");
        assert!(!c.finished(), "the 404 is not written yet");
        c.written(c.output().len());
        assert!(c.finished());
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        assert!(!c.has_output() && batch.is_empty());
    }

    /// Delivers `bytes` as one part of a streamed reply.
    fn part(c: &mut ConnState, seq: u64, bytes: &'static [u8], part: Part, flow: &Arc<Flow>) {
        c.on_part(
            seq,
            &Bytes::from_static(bytes),
            0..bytes.len(),
            part,
            Some(flow),
            &mut Tap::off(),
        );
    }

    #[test]
    fn streamed_parts_go_out_at_once_and_later_answers_wait_for_the_last() {
        fixture!(rules, c, batch);
        c.feed(b"GET /py HTTP/1.1\r\nHost: h\r\n\r\nGET /nope HTTP/1.1\r\nHost: h\r\n\r\n");
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        let flow = Arc::new(Flow::new(1 << 20, None));
        let seq = batch.jobs[0].seq;
        part(
            &mut c,
            seq,
            b"HTTP/1.1 200 OK\r\n\r\n1\r\na\r\n",
            Part::More,
            &flow,
        );
        assert_eq!(
            c.output.drain_for_test(),
            b"HTTP/1.1 200 OK\r\n\r\n1\r\na\r\n"
        );
        assert!(c.streaming());
        c.report_flow();
        part(&mut c, seq, b"1\r\nb\r\n", Part::More, &flow);
        part(&mut c, seq, b"0\r\n\r\n", Part::Last, &flow);
        let rest = c.output.drain_for_test();
        assert!(
            rest.starts_with(b"1\r\nb\r\n0\r\n\r\nHTTP/1.1 404"),
            "{rest:?}"
        );
        assert_eq!(c.inflight(), 0);
        assert!(!c.streaming());
        // The slot is gone: its flow was hung up, and a late part hangs up too.
        assert!(flow.is_gone());
    }

    #[test]
    fn a_stream_behind_an_unanswered_request_waits_in_its_slot() {
        fixture!(rules, c, batch);
        c.feed(b"GET /py HTTP/1.1\r\nHost: h\r\n\r\nGET /py HTTP/1.1\r\nHost: h\r\n\r\n");
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        let flow = Arc::new(Flow::new(4, None));
        let second = batch.jobs[1].seq;
        let head: &'static [u8] = b"HTTP/1.1 201 s\r\n\r\nab";
        flow.sent(head.len());
        part(&mut c, second, head, Part::More, &flow);
        assert!(!c.has_output());
        c.report_flow();
        assert!(!flow.has_room(), "nothing of it is written yet");
        reply(&mut c, batch.jobs[0].seq, OK);
        c.report_flow();
        assert!(!flow.has_room(), "in the output, not written");
        // The first answer, then what the stream sent so far; it stays first.
        assert_eq!(statuses(&c.output.drain_for_test()), vec!["200", "201"]);
        assert_eq!(c.inflight(), 1);
        c.report_flow();
        assert!(flow.has_room(), "written: the producer may go on");
        part(&mut c, second, b"cd", Part::Last, &flow);
        assert_eq!(c.output.drain_for_test(), b"cd");
        assert_eq!(c.inflight(), 0);
    }

    #[test]
    fn a_close_delimited_stream_ends_the_connection() {
        fixture!(rules, c, batch);
        c.feed(b"GET /py HTTP/1.1\r\nHost: h\r\n\r\nGET /nope HTTP/1.1\r\nHost: h\r\n\r\n");
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        let flow = Arc::new(Flow::new(1 << 20, None));
        part(
            &mut c,
            batch.jobs[0].seq,
            b"HTTP/1.1 200 OK\r\n\r\nbody",
            Part::Close,
            &flow,
        );
        assert_eq!(c.output.drain_for_test(), b"HTTP/1.1 200 OK\r\n\r\nbody");
        assert!(c.finished(), "nothing may follow a close-delimited body");
    }

    /// Uploads for route 0 (`/py`), as a reactor would give them.
    fn uploads(poll: &mio::Poll) -> Uploads {
        crate::upload::test_uploads(poll).0
    }

    /// Everything `upload` holds now.
    fn drain_upload(upload: &Upload) -> (Vec<u8>, crate::upload::Taken) {
        let mut got = Vec::new();
        loop {
            match upload.take(usize::MAX, false) {
                crate::upload::Taken::Data(b) => got.extend_from_slice(&b),
                other => return (got, other),
            }
        }
    }

    const BIG: usize = STREAM_THRESHOLD as usize + 100;

    /// [`fixture!`] with the Python route taking streamed bodies.
    macro_rules! upload_fixture {
        ($rules:ident, $c:ident, $batch:ident) => {
            let (router, limits) = parts();
            let poll = mio::Poll::new().expect("poll");
            let up = uploads(&poll);
            let mut $rules = rules(&router, &limits);
            $rules.uploads = Some(&up);
            let mut $c = conn();
            let mut $batch = Batch::default();
        };
    }

    #[test]
    fn a_large_body_streams_to_its_upload_and_the_next_request_follows() {
        upload_fixture!(rules, c, batch);
        c.feed(format!("POST /py HTTP/1.1\r\nHost: h\r\nContent-Length: {BIG}\r\n\r\n").as_bytes());
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        assert_eq!(batch.jobs.len(), 1, "the job goes before its body");
        let upload = batch.jobs[0].upload.clone().expect("an upload");
        assert!(batch.jobs[0].body.is_empty());
        assert_eq!(c.phase(), Phase::Body);
        let body: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
        let mut got = Vec::new();
        for piece in body.chunks(300_000) {
            c.feed(piece);
            c.process(&rules, ME, &mut batch, &mut Tap::off());
            got.extend(drain_upload(&upload).0);
        }
        // A request after the body, whose bytes come with its last piece.
        c.feed(b"GET /py HTTP/1.1\r\nHost: h\r\n\r\n");
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        let (rest, end) = drain_upload(&upload);
        got.extend(rest);
        assert_eq!(got, body);
        assert_eq!(end, crate::upload::Taken::End);
        assert_eq!(batch.jobs.len(), 2);
        assert!(batch.jobs[1].upload.is_none());
        assert!(!c.is_uploading());
    }

    #[test]
    fn a_full_upload_stops_reading_until_the_app_takes_it() {
        upload_fixture!(rules, c, batch);
        let size = 8 * crate::upload::IN_FLIGHT;
        c.feed(
            format!("POST /py HTTP/1.1\r\nHost: h\r\nContent-Length: {size}\r\n\r\n").as_bytes(),
        );
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        c.feed(&vec![b'x'; 3 * crate::upload::IN_FLIGHT]);
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        assert!(c.read_blocked(&rules));
        assert_ne!(c.phase(), Phase::Body, "held up by its app, not the client");
        let upload = batch.jobs[0].upload.clone().expect("an upload");
        drain_upload(&upload);
        assert!(!c.read_blocked(&rules));
        // (What one read brings goes to the app whole: the reactor reads no
        // more than UPLOAD_READ at a time, so that is the most it goes over.)
        c.feed(&vec![b'x'; crate::upload::IN_FLIGHT]);
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        assert!(c.read_blocked(&rules));
    }

    #[test]
    fn an_abandoned_body_is_dropped_and_never_parsed() {
        upload_fixture!(rules, c, batch);
        let smuggled = b"GET /py HTTP/1.1\r\nHost: s\r\n\r\n".repeat(BIG / 29 + 1);
        c.feed(b"POST /py HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
        c.feed(format!("{:x}\r\n", smuggled.len()).as_bytes());
        c.feed(&smuggled[..BIG]);
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        assert_eq!(batch.jobs.len(), 1);
        let upload = batch.jobs[0].upload.clone().expect("an upload");
        // The app answers without reading.
        upload.abandon();
        reply(&mut c, batch.jobs[0].seq, OK);
        c.feed(&smuggled[BIG..]);
        c.feed(b"\r\n0\r\n\r\nGET /py HTTP/1.1\r\nHost: next\r\n\r\n");
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        assert_eq!(batch.jobs.len(), 2, "only the request after the body");
        let host = batch.jobs[1].fields_in(&batch.fields)[0]
            .value
            .get(&batch.jobs[1].data);
        assert_eq!(host, b"next");
    }

    #[test]
    fn a_chunked_body_past_max_body_is_413_in_place_of_the_app_answer() {
        let router = Router::new(["/py"]);
        let limits = Limits {
            max_body: 2 * STREAM_THRESHOLD,
            ..Limits::default()
        };
        let poll = mio::Poll::new().expect("poll");
        let up = uploads(&poll);
        let mut rules = rules(&router, &limits);
        rules.uploads = Some(&up);
        let mut c = conn();
        let mut batch = Batch::default();
        c.feed(b"POST /py HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
        let chunk = vec![b'y'; STREAM_THRESHOLD as usize];
        for _ in 0..3 {
            c.feed(format!("{:x}\r\n", chunk.len()).as_bytes());
            c.feed(&chunk);
            c.feed(b"\r\n");
            c.process(&rules, ME, &mut batch, &mut Tap::off());
            if let Some(u) = batch.jobs.first().and_then(|j| j.upload.as_ref()) {
                drain_upload(u);
            }
        }
        let upload = batch.jobs[0].upload.clone().expect("an upload");
        assert_eq!(drain_upload(&upload).1, crate::upload::Taken::Gone);
        assert_eq!(statuses(c.output().first()), vec!["413"]);
        assert!(c.is_closing());
        // The app's own answer, when it comes, is not sent.
        reply(&mut c, batch.jobs[0].seq, OK);
        assert_eq!(statuses(&c.output.drain_for_test()), vec!["413"]);
    }

    #[test]
    fn a_streamed_body_is_due_from_the_client_also_when_the_connection_closes_after_it() {
        upload_fixture!(rules, c, batch);
        c.feed(
            format!("POST /py HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: {BIG}\r\n\r\n")
                .as_bytes(),
        );
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        assert!(c.is_closing() && c.is_uploading());
        assert_eq!(c.phase(), Phase::Body, "body_timeout applies");
        c.time_out(&mut Tap::off());
        let upload = batch.jobs[0].upload.clone().expect("an upload");
        assert_eq!(drain_upload(&upload).1, crate::upload::Taken::Gone);
        assert_eq!(statuses(c.output().first()), vec!["408"]);
        // A Connection: close body is still read to its end.
        let mut c = conn();
        c.feed(
            format!("POST /py HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: {BIG}\r\n\r\n")
                .as_bytes(),
        );
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        c.feed(&vec![b'q'; BIG]);
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        let upload = batch.jobs[1].upload.clone().expect("an upload");
        let (data, end) = drain_upload(&upload);
        assert_eq!((data.len(), end), (BIG, crate::upload::Taken::End));
    }

    #[test]
    fn without_uploads_a_large_body_is_buffered_whole() {
        fixture!(rules, c, batch);
        c.feed(format!("POST /py HTTP/1.1\r\nHost: h\r\nContent-Length: {BIG}\r\n\r\n").as_bytes());
        c.feed(&vec![b'z'; BIG]);
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        assert_eq!(batch.jobs.len(), 1);
        assert!(batch.jobs[0].upload.is_none());
        assert_eq!(batch.jobs[0].body.len(), BIG);
    }

    #[test]
    fn small_chunks_reach_the_upload_as_one_piece_per_read() {
        upload_fixture!(rules, c, batch);
        c.feed(b"POST /py HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
        // Past the threshold in 3-byte chunks: 8 bytes on the wire each.
        let chunks = STREAM_THRESHOLD as usize / 8 + 1;
        c.feed(&b"3\r\nabc\r\n".repeat(chunks));
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        let upload = batch.jobs[0].upload.clone().expect("an upload");
        c.feed(&b"3\r\nabc\r\n".repeat(10));
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        let first = upload.take(usize::MAX, false);
        assert_eq!(
            first,
            crate::upload::Taken::Data(Bytes::from(b"abc".repeat(chunks)))
        );
        let second = upload.take(usize::MAX, false);
        assert_eq!(
            second,
            crate::upload::Taken::Data(Bytes::from(b"abc".repeat(10)))
        );
        c.feed(b"0\r\n\r\n");
        c.process(&rules, ME, &mut batch, &mut Tap::off());
        assert_eq!(upload.take(1, false), crate::upload::Taken::End);
    }
}
