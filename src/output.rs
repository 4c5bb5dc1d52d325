//! A connection's response bytes in the order they go out, owned by its reactor
//! thread: small responses are copied into one tail buffer (so a round of
//! pipelined answers leaves in one `write()`), large ones stay in the worker's
//! reply buffer and are queued as shared [`Bytes`] instead of being copied again.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// Responses at least this long are queued shared rather than copied: below it a
/// copy costs less than a segment (and an extra iovec) does.
pub const SHARE_MIN: usize = 32 * 1024;
/// Most slices handed to one `writev`.
pub const MAX_SLICES: usize = 16;

#[derive(Debug, Default)]
pub struct Output {
    /// Shared segments, in order, all before `tail`.
    segments: VecDeque<Bytes>,
    /// Bytes in `segments`.
    queued: usize,
    /// Copied bytes, after every segment.
    tail: BytesMut,
}

impl Output {
    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.queued + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a copy of `bytes`.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
    }

    /// Appends `bytes`, sharing rather than copying them if they are large.
    pub fn push(&mut self, bytes: Bytes) {
        if bytes.len() < SHARE_MIN {
            self.tail.extend_from_slice(&bytes);
            return;
        }
        if !self.tail.is_empty() {
            let copied = self.tail.split().freeze();
            self.queued += copied.len();
            self.segments.push_back(copied);
        }
        self.queued += bytes.len();
        self.segments.push_back(bytes);
    }

    /// The buffer responses are encoded into directly (it comes last).
    pub fn tail_mut(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// The first bytes to write.
    pub fn first(&self) -> &[u8] {
        self.segments.front().map_or(&self.tail[..], |s| &s[..])
    }

    /// Whether more than one slice waits (then `writev` with [`Output::slices`]).
    pub fn is_split(&self) -> bool {
        !self.segments.is_empty()
    }

    /// Fills `dst` with the slices to write, in order; returns how many.
    pub fn slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let tail = (!self.tail.is_empty()).then_some(&self.tail[..]);
        let all = self.segments.iter().map(|s| &s[..]).chain(tail);
        let mut n = 0;
        for (slot, bytes) in dst.iter_mut().zip(all) {
            *slot = IoSlice::new(bytes);
            n += 1;
        }
        n
    }

    /// `n` bytes from the front were written.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.segments.front_mut() else {
                self.tail.advance(n.min(self.tail.len()));
                return;
            };
            let step = n.min(front.len());
            front.advance(step);
            self.queued -= step;
            n -= step;
            if front.is_empty() {
                self.segments.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(o: &mut Output) -> Vec<u8> {
        let mut wire = Vec::new();
        while !o.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = o.slices(&mut slices);
            // Write at most 10 000 bytes at a time, as a socket might.
            let mut budget = 10_000;
            let mut took = 0;
            for s in &slices[..n] {
                let k = s.len().min(budget);
                wire.extend_from_slice(&s[..k]);
                budget -= k;
                took += k;
            }
            o.advance(took);
        }
        wire
    }

    #[test]
    fn small_responses_are_copied_into_one_buffer() {
        let mut o = Output::default();
        o.extend(b"a");
        o.push(Bytes::from_static(b"bc"));
        assert!(!o.is_split());
        assert_eq!(o.first(), b"abc");
    }

    #[test]
    fn large_responses_are_shared_in_order() {
        let big = Bytes::from(vec![b'x'; SHARE_MIN * 2]);
        let mut o = Output::default();
        o.extend(b"head");
        o.push(big.clone());
        o.extend(b"after");
        assert!(o.is_split());
        assert_eq!(o.len(), 4 + big.len() + 5);
        // The segment points into the same memory: no copy.
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        assert_eq!(o.slices(&mut slices), 3);
        assert_eq!(slices[1].as_ptr(), big.as_ptr());
        let mut expected = b"head".to_vec();
        expected.extend_from_slice(&big);
        expected.extend_from_slice(b"after");
        assert_eq!(drain(&mut o), expected);
        assert!(o.is_empty() && !o.is_split());
    }
}
