//! A connection's response bytes in the order they go out, owned by its reactor
//! thread: small responses are copied into one tail buffer (so a round of
//! pipelined answers leaves in one `write()`), large ones stay in the worker's
//! reply buffer and are queued as shared [`Bytes`] instead of being copied again,
//! and a static file's body is queued as an open file and a byte range, which the
//! reactor hands to `sendfile` (zero-copy) when it reaches the front.

use std::collections::VecDeque;
use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};

use bytes::{Buf, Bytes, BytesMut};

/// Responses at least this long are queued shared rather than copied: below it a
/// copy costs less than a segment (and an extra iovec) does.
pub const SHARE_MIN: usize = 32 * 1024;
/// Most slices handed to one `writev`.
pub const MAX_SLICES: usize = 16;

/// Bytes `offset..end` of an open file, still to be sent.
#[derive(Debug)]
pub struct FileSlice {
    file: File,
    offset: u64,
    end: u64,
}

impl FileSlice {
    pub fn new(file: File, offset: u64, len: u64) -> FileSlice {
        FileSlice {
            file,
            offset,
            end: offset.saturating_add(len),
        }
    }

    /// Bytes still to send.
    pub fn len(&self) -> u64 {
        self.end - self.offset
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What goes out before the tail, in order.
#[derive(Debug)]
enum Segment {
    Shared(Bytes),
    File(FileSlice),
}

impl Segment {
    fn len(&self) -> usize {
        match self {
            Segment::Shared(b) => b.len(),
            // A file slice is sent in pieces far below `usize::MAX`; clamping only
            // matters on 32-bit targets, where it makes the count conservative.
            Segment::File(f) => usize::try_from(f.len()).unwrap_or(usize::MAX),
        }
    }
}

/// The front of a file segment: what to pass to `sendfile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileFront {
    pub fd: RawFd,
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug, Default)]
pub struct Output {
    /// Shared and file segments, in order, all before `tail`.
    segments: VecDeque<Segment>,
    /// Bytes in `segments`, file bytes included: a queued file counts against
    /// `max_write_buffer` like any response, so a client cannot pipeline more
    /// open files than that allows.
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
        self.seal_tail();
        self.queued += bytes.len();
        self.segments.push_back(Segment::Shared(bytes));
    }

    /// Appends a file's bytes, after everything queued so far.
    pub fn push_file(&mut self, file: FileSlice) {
        if file.is_empty() {
            return;
        }
        self.seal_tail();
        let segment = Segment::File(file);
        self.queued = self.queued.saturating_add(segment.len());
        self.segments.push_back(segment);
    }

    /// Moves the tail's bytes into a segment, so that what comes next follows them.
    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            let copied = self.tail.split().freeze();
            self.queued += copied.len();
            self.segments.push_back(Segment::Shared(copied));
        }
    }

    /// The buffer responses are encoded into directly (it comes last).
    pub fn tail_mut(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// The first bytes to write (empty when a file comes first).
    pub fn first(&self) -> &[u8] {
        match self.segments.front() {
            None => &self.tail[..],
            Some(Segment::Shared(s)) => &s[..],
            Some(Segment::File(_)) => &[],
        }
    }

    /// Whether more than one slice waits (then `writev` with [`Output::slices`]).
    pub fn is_split(&self) -> bool {
        !self.segments.is_empty()
    }

    /// The file to `sendfile` from, when a file segment is first.
    pub fn front_file(&self) -> Option<FileFront> {
        match self.segments.front() {
            Some(Segment::File(f)) => Some(FileFront {
                fd: f.file.as_raw_fd(),
                offset: f.offset,
                len: f.len(),
            }),
            _ => None,
        }
    }

    /// Fills `dst` with the slices to write, in order, up to the first file
    /// segment; returns how many.
    pub fn slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let shared = self.segments.iter().map_while(|s| match s {
            Segment::Shared(b) => Some(&b[..]),
            Segment::File(_) => None,
        });
        let files = self.segments.iter().any(|s| matches!(s, Segment::File(_)));
        let tail = (!files && !self.tail.is_empty()).then_some(&self.tail[..]);
        let mut n = 0;
        for (slot, bytes) in dst.iter_mut().zip(shared.chain(tail)) {
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
            let done = match front {
                Segment::Shared(b) => {
                    b.advance(step);
                    b.is_empty()
                }
                Segment::File(f) => {
                    f.offset += step as u64;
                    f.is_empty()
                }
            };
            self.queued -= step;
            n -= step;
            if done {
                self.segments.pop_front();
            }
        }
    }

    /// Everything queued, as a socket would receive it (files read, at most
    /// 10 000 bytes per write); leaves the output empty. For tests.
    #[cfg(test)]
    pub(crate) fn drain_for_test(&mut self) -> Vec<u8> {
        let mut wire = Vec::new();
        while !self.is_empty() {
            if let Some(Segment::File(f)) = self.segments.front() {
                let mut chunk = vec![0u8; f.len().min(10_000) as usize];
                std::os::unix::fs::FileExt::read_exact_at(&f.file, &mut chunk, f.offset)
                    .expect("read test file");
                wire.extend_from_slice(&chunk);
                self.advance(chunk.len());
                continue;
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = self.slices(&mut slices);
            let mut budget = 10_000;
            let mut took = 0;
            for s in &slices[..n] {
                let k = s.len().min(budget);
                wire.extend_from_slice(&s[..k]);
                budget -= k;
                took += k;
            }
            self.advance(took);
        }
        wire
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(o: &mut Output) -> Vec<u8> {
        o.drain_for_test()
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

    #[test]
    fn file_segments_go_out_in_order() {
        let path = std::env::temp_dir().join(format!("pyrs-output-{}", std::process::id()));
        let contents: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &contents).expect("write");
        let file = File::open(&path).expect("open");
        let _ = std::fs::remove_file(&path);
        let mut o = Output::default();
        o.extend(b"head");
        o.push_file(FileSlice::new(file, 100, 30_000));
        o.extend(b"after");
        assert_eq!(o.len(), 4 + 30_000 + 5);
        // Only the bytes before the file go to writev.
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        assert_eq!(o.slices(&mut slices), 1);
        assert_eq!(&slices[0][..], b"head");
        let mut expected = b"head".to_vec();
        expected.extend_from_slice(&contents[100..30_100]);
        expected.extend_from_slice(b"after");
        assert_eq!(drain(&mut o), expected);
        assert!(o.is_empty());
    }
}
