//! The reactor's side of waking: a [`Bell`] is a reactor's `mio::Waker` that
//! rings only while the reactor sleeps. Senders (the Python worker with its
//! replies, a thread streaming a response) ring it after each message; a reactor
//! that is busy serving sockets looks at its reply channel every round before it
//! sleeps, so writing its eventfd then is a wasted syscall and a wasted
//! `epoll_wait` return.
//!
//! What was tried beside it and left out, with the figures, is in
//! `bench/RESULTS.md` (issue 17): a bounded adaptive spin before sleeping, on
//! either side of the hand-off, lost throughput on a 2-core machine (a spinning
//! thread takes the core the client or another reactor needs), and pinning the
//! threads gained nothing there.
//!
//! Rung by the Python worker thread and streaming threads; parked by its
//! reactor thread.

use std::sync::atomic::{fence, AtomicBool, Ordering};

use mio::Waker;

/// A reactor's waker, rung only while the reactor sleeps (or is about to).
#[derive(Debug)]
pub struct Bell {
    waker: Waker,
    /// The reactor is in (or entering) `epoll_wait` with a timeout.
    parked: AtomicBool,
}

impl Bell {
    pub fn new(waker: Waker) -> Bell {
        Bell {
            waker,
            parked: AtomicBool::new(false),
        }
    }

    /// Sender, after it put a message in the reactor's channel: wakes the
    /// reactor if it sleeps. Never loses a wake: see [`Bell::park`].
    pub fn ring(&self) {
        // Pairs with the fence in `park`: either this load sees `parked`, or the
        // reactor's look at its channel after parking sees the message.
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }

    /// Wakes the reactor whatever it is doing (a stop).
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }

    /// Reactor, before a sleeping `epoll_wait`: from here on messages ring.
    /// The caller must look at its channel *after* this and not sleep if
    /// something is there.
    pub fn park(&self) {
        self.parked.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Reactor, after `epoll_wait` returned: it looks at its channel before
    /// sleeping again, so senders need not ring.
    pub fn unpark(&self) {
        self.parked.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_ring_wakes_only_a_parked_reactor() {
        let mut poll = mio::Poll::new().expect("poll");
        let bell = Bell::new(Waker::new(poll.registry(), mio::Token(7)).expect("waker"));
        let mut events = mio::Events::with_capacity(4);
        bell.ring();
        poll.poll(&mut events, Some(Duration::ZERO)).expect("poll");
        assert!(events.is_empty(), "not parked: no wake");
        bell.park();
        bell.ring();
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .expect("poll");
        assert_eq!(events.iter().count(), 1, "parked: woken");
        bell.ring();
        poll.poll(&mut events, Some(Duration::ZERO)).expect("poll");
        assert!(events.is_empty(), "one ring per park");
    }
}
