//! A raw TCP connection whose bytes a test reads itself: wait for a marker,
//! for EOF, or for silence (the streaming tests).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::{Server, IO_TIMEOUT};

/// A raw connection whose bytes the test reads itself.
pub struct Raw {
    pub stream: TcpStream,
    /// Read and not yet taken.
    pub got: Vec<u8>,
}

impl Raw {
    pub fn open(s: &Server) -> Raw {
        let stream = TcpStream::connect(s.addr()).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        Raw {
            stream,
            got: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads until `needle` has arrived (within `wait`); returns everything
    /// read up to and including it, keeping the rest.
    pub fn until(&mut self, needle: &[u8], wait: Duration) -> Vec<u8> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(i) = find(&self.got, needle) {
                return self.got.drain(..i + needle.len()).collect();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{:?} did not arrive within {wait:?}; got {:?}",
                text(&needle[..needle.len().min(40)]),
                text(&self.got[self.got.len().saturating_sub(200)..])
            );
            self.stream.set_read_timeout(Some(left)).expect("timeout");
            let mut buf = [0u8; 65536];
            match self.stream.read(&mut buf) {
                Ok(0) => panic!(
                    "closed before {:?}; got {:?}",
                    text(&needle[..needle.len().min(40)]),
                    text(&self.got[self.got.len().saturating_sub(200)..])
                ),
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Reads to EOF (within `wait`); returns what came.
    pub fn read_to_eof(&mut self, wait: Duration) -> Vec<u8> {
        self.stream.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = [0u8; 65536];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return std::mem::take(&mut self.got),
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return std::mem::take(&mut self.got)
                }
                Err(e) => panic!("no EOF within {wait:?} ({e}); got {:?}", text(&self.got)),
            }
        }
    }

    /// Asserts nothing more arrives within `wait` (and the connection stays open).
    pub fn silent(&mut self, wait: Duration) {
        assert!(self.got.is_empty(), "unexpected {:?}", text(&self.got));
        self.stream.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = [0u8; 1024];
        match self.stream.read(&mut buf) {
            Ok(0) => panic!("closed"),
            Ok(n) => panic!("unexpected {:?}", text(&buf[..n])),
            Err(_) => {}
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
