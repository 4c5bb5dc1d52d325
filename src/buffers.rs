//! Connection buffers: the per-reactor pool they come from and go back to (read and
//! write buffers, and the [`Pending`] records of the access log and metrics), and
//! the one `read()` that fills a read buffer. Owned by a reactor thread; a connection
//! holds a buffer only while it has bytes in it, so an idle keep-alive connection
//! costs no buffer memory.

use std::io;
use std::os::fd::RawFd;

use bytes::BytesMut;

use crate::tap::Pending;

/// Size of a pooled read or write buffer. A buffer grows past it only for a large
/// body, a long pipeline or a large response.
pub const BUF_SIZE: usize = 16 * 1024;
/// The read buffer grows when it has less than this free.
const READ_MIN_SPARE: usize = 2 * 1024;
/// Spare buffers kept per kind; connections take one while busy and give it back
/// when they go idle.
const POOL_MAX: usize = 256;
/// Buffers that grew past this are freed once empty instead of pooled.
const KEEP_BUFFER_CAPACITY: usize = 256 * 1024;

/// Spare read and write buffers of one reactor.
#[derive(Debug, Default)]
pub struct BufPool {
    read: Vec<BytesMut>,
    write: Vec<BytesMut>,
    /// Emptied records that have held requests (so hold memory): a new
    /// connection's first request costs no allocation.
    pending: Vec<Pending>,
}

impl BufPool {
    /// Gives `buf` a pooled read buffer if it has none.
    pub fn lend_read(&mut self, buf: &mut BytesMut) {
        lend(&mut self.read, buf);
    }

    /// Gives `buf` a pooled write buffer if it has none.
    pub fn lend_write(&mut self, buf: &mut BytesMut) {
        lend(&mut self.write, buf);
    }

    /// Gives `p` a pooled record if it never held any request.
    pub fn lend_pending(&mut self, p: &mut Pending) {
        if !p.has_memory() {
            if let Some(pooled) = self.pending.pop() {
                *p = pooled;
            }
        }
    }

    /// Takes back `p` if it is empty and holds memory.
    pub fn recycle_pending(&mut self, p: &mut Pending) {
        if p.is_empty()
            && p.has_memory()
            && p.text_capacity() <= KEEP_BUFFER_CAPACITY
            && self.pending.len() < POOL_MAX
        {
            self.pending.push(std::mem::take(p));
        }
    }

    /// Takes back `read` and `write` where they are empty (or frees them).
    pub fn recycle(&mut self, read: &mut BytesMut, write: &mut BytesMut) {
        recycle(read, &mut self.read);
        recycle(write, &mut self.write);
    }
}

fn lend(pool: &mut Vec<BytesMut>, buf: &mut BytesMut) {
    if buf.capacity() == 0 {
        *buf = pool
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(BUF_SIZE));
    }
}

/// Gives an empty buffer back to the pool (or frees it). A read buffer still
/// shared with requests in flight is just released; its memory is freed when the
/// worker drops them.
fn recycle(buf: &mut BytesMut, pool: &mut Vec<BytesMut>) {
    if !buf.is_empty() || buf.capacity() == 0 {
        return;
    }
    let mut b = std::mem::take(buf);
    if pool.len() < POOL_MAX && b.capacity() <= KEEP_BUFFER_CAPACITY && b.try_reclaim(BUF_SIZE) {
        b.clear();
        pool.push(b);
    }
}

/// What one `read()` got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Less than it asked for (0 = EOF): the socket had no more.
    Short(usize),
    /// As much as it asked for: there may be more.
    Full,
}

/// Reads from `fd` into the spare capacity of `buf`, growing it first if needed.
pub fn read_into(fd: RawFd, buf: &mut BytesMut) -> io::Result<ReadOutcome> {
    if buf.capacity() - buf.len() < READ_MIN_SPARE {
        buf.reserve(BUF_SIZE.max(buf.len()));
    }
    let spare = buf.spare_capacity_mut();
    // SAFETY: read(2) writes at most `spare.len()` bytes into the spare capacity and
    // returns how many; only those are then marked initialized.
    let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), spare.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let (n, asked) = (n as usize, spare.len());
    // SAFETY: the kernel initialized `n` bytes past the old length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(if n < asked {
        ReadOutcome::Short(n)
    } else {
        ReadOutcome::Full
    })
}
