//! WebSocket framing (RFC 6455) for one upgraded connection, on its reactor
//! thread. tungstenite's protocol layer (`WebSocketContext`) does the framing:
//! unmasking, fragmentation and reassembly, UTF-8 validation of text, control
//! frames between fragments, answering ping with pong, and the close
//! handshake. It runs here over two in-memory buffers instead of the socket —
//! bytes the reactor read go in with [`WsConn::feed`], frames to write come out
//! of [`WsConn::output`] — so it fits the reactor's non-blocking loop and its
//! own writev path. What leaves this file for the Python side is whole
//! messages as bytes ([`Event`]); a protocol error becomes the close code the
//! RFC asks for (1002, 1007, 1009) and the connection's end.

use std::io::{self, Read, Write};

use bytes::{Buf, Bytes, BytesMut};
use tungstenite::error::{CapacityError, Error, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::{CloseFrame, Utf8Bytes};
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

/// Largest message accepted unless `max_websocket_message` says otherwise.
pub const DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// How much tungstenite takes from [`WsConn`]'s input per read.
const READ_CHUNK: usize = 4096;

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    tungstenite::handshake::derive_accept_key(key)
}

/// What the client did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole text message (valid UTF-8).
    Text(Bytes),
    /// A whole binary message.
    Binary(Bytes),
    /// The client closed (its close frame answered) or broke the protocol
    /// (a close frame with `code` sent to it): nothing more comes.
    Closed { code: u16, reason: String },
}

/// The two buffers tungstenite reads from and writes to.
struct Io<'a> {
    input: &'a mut BytesMut,
    output: &'a mut Vec<u8>,
}

impl Read for Io<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input.advance(n);
        Ok(n)
    }
}

impl Write for Io<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One upgraded connection's protocol state.
pub struct WsConn {
    ctx: WebSocketContext,
    input: BytesMut,
    output: Vec<u8>,
    /// The close is decided: no more events.
    closed: bool,
}

impl WsConn {
    /// `leftover`: bytes the client sent after its upgrade request.
    pub fn new(max_message: usize, leftover: &[u8]) -> WsConn {
        let config = WebSocketConfig::default()
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message))
            // tungstenite's own write buffer stays small: frames go to `output`
            // at once, and the reactor bounds that.
            .write_buffer_size(0)
            // tungstenite zero-fills this much of its input buffer before every
            // read it makes, the last one (finding nothing more) included: at
            // its default of 128 KiB that memset was 29 % of a reactor's CPU in
            // the echo benchmark. Its reads here come from memory, so a small
            // size only means more (cheap) copies for a large message.
            .read_buffer_size(READ_CHUNK);
        WsConn {
            ctx: WebSocketContext::new(Role::Server, Some(config)),
            input: BytesMut::from(leftover),
            output: Vec::new(),
            closed: false,
        }
    }

    /// Bytes read from the socket.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// The next whole message, if the bytes fed so far complete one. Pings are
    /// answered (into the output) on the way.
    pub fn poll(&mut self) -> Option<Event> {
        if self.closed {
            return None;
        }
        loop {
            let mut io = Io {
                input: &mut self.input,
                output: &mut self.output,
            };
            match self.ctx.read(&mut io) {
                Ok(Message::Text(text)) => return Some(Event::Text(Bytes::from(text))),
                Ok(Message::Binary(data)) => return Some(Event::Binary(data)),
                // Answered by tungstenite; a pong needs nothing.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Ok(Message::Close(frame)) => {
                    // tungstenite queued the answering close frame.
                    let mut io = Io {
                        input: &mut self.input,
                        output: &mut self.output,
                    };
                    let _ = self.ctx.flush(&mut io);
                    self.closed = true;
                    let (code, reason) = frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.as_str().to_owned())
                    });
                    return Some(Event::Closed { code, reason });
                }
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(Error::ConnectionClosed | Error::AlreadyClosed) => {
                    self.closed = true;
                    return Some(Event::Closed {
                        code: 1005,
                        reason: String::new(),
                    });
                }
                Err(e) => {
                    let (code, reason) = close_for(&e);
                    self.close(code, reason);
                    return Some(Event::Closed {
                        code,
                        reason: reason.to_owned(),
                    });
                }
            }
        }
    }

    /// Queues a text message. False once the connection is closing.
    pub fn send_text(&mut self, text: &str) -> bool {
        self.send(Message::Text(Utf8Bytes::from(text)))
    }

    /// Queues a binary message. False once the connection is closing.
    pub fn send_binary(&mut self, data: Bytes) -> bool {
        self.send(Message::Binary(data))
    }

    /// Queues a ping (keep-alive, idle check).
    pub fn ping(&mut self) -> bool {
        self.send(Message::Ping(Bytes::new()))
    }

    fn send(&mut self, message: Message) -> bool {
        let mut io = Io {
            input: &mut self.input,
            output: &mut self.output,
        };
        self.ctx.write(&mut io, message).is_ok() && self.ctx.flush(&mut io).is_ok()
    }

    /// Starts the close handshake from our side (or answers a broken client).
    pub fn close(&mut self, code: u16, reason: &str) {
        self.closed = true;
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from(reason),
        };
        let mut io = Io {
            input: &mut self.input,
            output: &mut self.output,
        };
        let _ = self.ctx.close(&mut io, Some(frame));
        let _ = self.ctx.flush(&mut io);
    }

    /// Frames waiting to be written to the socket.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    /// No more messages will be read or written.
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

/// The close code and reason for a client that broke the protocol.
fn close_for(e: &Error) -> (u16, &'static str) {
    match e {
        Error::Capacity(CapacityError::MessageTooLong { .. }) => (1009, "message too big"),
        Error::Capacity(_) => (1009, "message too big"),
        Error::Utf8(_) => (1007, "invalid UTF-8 in a text message"),
        Error::Protocol(ProtocolError::InvalidCloseSequence) => (1002, "protocol error"),
        _ => (1002, "protocol error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: FIN flag, opcode, masked payload.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65536 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn unmasked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    /// The server frames written so far: (opcode, payload).
    fn written(ws: &mut WsConn) -> Vec<(u8, Vec<u8>)> {
        let out = std::mem::take(ws.output());
        let mut frames = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let opcode = out[at] & 0x0f;
            let (len, head) = match out[at + 1] & 0x7f {
                126 => (u16::from_be_bytes([out[at + 2], out[at + 3]]) as usize, 4),
                127 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&out[at + 2..at + 10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                n => (n as usize, 2),
            };
            assert_eq!(out[at + 1] & 0x80, 0, "server frames are not masked");
            frames.push((opcode, out[at + head..at + head + len].to_vec()));
            at += head + len;
        }
        frames
    }

    fn close_code(payload: &[u8]) -> u16 {
        u16::from_be_bytes([payload[0], payload[1]])
    }

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn text_and_binary_messages_arrive_whole() {
        let mut ws = WsConn::new(DEFAULT_MAX_MESSAGE, &frame(true, 1, b"hello"));
        assert_eq!(ws.poll(), Some(Event::Text(Bytes::from_static(b"hello"))));
        assert_eq!(ws.poll(), None);
        let bin = frame(true, 2, &[0, 1, 2, 255]);
        // Byte by byte: nothing until the frame is complete.
        for b in &bin[..bin.len() - 1] {
            ws.feed(&[*b]);
            assert_eq!(ws.poll(), None);
        }
        ws.feed(&bin[bin.len() - 1..]);
        assert_eq!(
            ws.poll(),
            Some(Event::Binary(Bytes::from_static(&[0, 1, 2, 255])))
        );
    }

    #[test]
    fn fragments_are_reassembled_with_a_ping_between_them() {
        let mut bytes = frame(false, 1, b"hel");
        bytes.extend(frame(true, 9, b"are you there"));
        bytes.extend(frame(true, 0, b"lo"));
        let mut ws = WsConn::new(DEFAULT_MAX_MESSAGE, &bytes);
        assert_eq!(ws.poll(), Some(Event::Text(Bytes::from_static(b"hello"))));
        assert_eq!(
            written(&mut ws),
            vec![(10, b"are you there".to_vec())],
            "pong"
        );
    }

    #[test]
    fn a_large_message_uses_extended_lengths() {
        let big = vec![b'x'; 1 << 20];
        let mut ws = WsConn::new(DEFAULT_MAX_MESSAGE, &frame(true, 2, &big));
        assert_eq!(ws.poll(), Some(Event::Binary(Bytes::from(big.clone()))));
        assert!(ws.send_binary(Bytes::from(big.clone())));
        assert_eq!(written(&mut ws), vec![(2, big)]);
    }

    #[test]
    fn the_client_closes_and_is_answered() {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let mut ws = WsConn::new(DEFAULT_MAX_MESSAGE, &frame(true, 8, &payload));
        assert_eq!(
            ws.poll(),
            Some(Event::Closed {
                code: 1000,
                reason: "bye".into()
            })
        );
        let frames = written(&mut ws);
        assert_eq!(frames.len(), 1);
        assert_eq!((frames[0].0, close_code(&frames[0].1)), (8, 1000));
        assert!(ws.is_closed());
        assert_eq!(ws.poll(), None);
    }

    #[test]
    fn protocol_errors_close_with_the_rfc_codes() {
        for (bytes, code) in [
            (unmasked(1, b"hi"), 1002),
            (frame(true, 1, &[0xff, 0xfe]), 1007),
            (frame(true, 9, &[0u8; 126]), 1002),
            (frame(true, 3, b"?"), 1002),
            (frame(true, 0, b"no start"), 1002),
        ] {
            let mut ws = WsConn::new(DEFAULT_MAX_MESSAGE, &bytes);
            match ws.poll() {
                Some(Event::Closed { code: got, .. }) => assert_eq!(got, code, "{bytes:?}"),
                other => panic!("{bytes:?}: {other:?}"),
            }
            let frames = written(&mut ws);
            assert_eq!(
                frames.last().map(|f| (f.0, close_code(&f.1))),
                Some((8, code))
            );
        }
    }

    #[test]
    fn a_message_past_the_limit_closes_1009() {
        let mut bytes = frame(false, 2, &[1u8; 600]);
        bytes.extend(frame(true, 0, &[1u8; 600]));
        let mut ws = WsConn::new(1000, &bytes);
        assert!(matches!(ws.poll(), Some(Event::Closed { code: 1009, .. })));
    }

    #[test]
    fn the_server_closes_with_a_code_and_reason() {
        let mut ws = WsConn::new(DEFAULT_MAX_MESSAGE, &[]);
        assert!(ws.send_text("last words"));
        ws.close(4000, "done");
        assert!(!ws.send_text("too late"));
        let frames = written(&mut ws);
        assert_eq!(frames[0], (1, b"last words".to_vec()));
        assert_eq!(frames[1].0, 8);
        assert_eq!(close_code(&frames[1].1), 4000);
        assert_eq!(&frames[1].1[2..], b"done");
    }
}
