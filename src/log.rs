//! Error logging that never blocks a reactor: lines go through a bounded channel to
//! a `pyrs-log` thread that writes them to stderr. When stderr is slow and the
//! channel is full, lines are dropped and counted, and the count is reported with
//! the next line that gets through. Callers log once per event (a failed accept, a
//! refused connection), never per byte or per request.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;

use crossbeam_channel::{Sender, TrySendError};

/// Lines buffered for the log thread before new ones are dropped.
const LOG_QUEUE: usize = 1024;

static SENDER: OnceLock<Sender<String>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Starts the log thread; later calls do nothing. Without it, [`error`] writes to
/// stderr directly.
pub fn init() {
    SENDER.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::bounded::<String>(LOG_QUEUE);
        let spawned = thread::Builder::new()
            .name("pyrs-log".into())
            .spawn(move || {
                let stderr = std::io::stderr();
                for line in rx {
                    let dropped = DROPPED.swap(0, Ordering::Relaxed);
                    let mut err = stderr.lock();
                    if dropped > 0 {
                        let _ = writeln!(err, "pyrs: ({dropped} log lines dropped)");
                    }
                    let _ = writeln!(err, "pyrs: {line}");
                }
            });
        if spawned.is_err() {
            // No log thread: lines go nowhere, but are still counted.
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        tx
    });
}

/// Logs one line (prefixed with `pyrs: `) without blocking.
pub fn error(line: String) {
    match SENDER.get() {
        Some(tx) => match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        },
        None => eprintln!("pyrs: {line}"),
    }
}
