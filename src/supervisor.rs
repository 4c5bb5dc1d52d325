//! Worker processes (`"workers": N`): the supervisor, on the main thread of the
//! parent process. It holds the port (so port 0 means one port for all), forks the
//! workers before anything else starts (no threads and no Python running in the
//! parent, or, under the Python package, CPython's fork hooks around the fork), each
//! of which runs a whole server — its own reactors, interpreter and handler
//! instances — on the shared port through `SO_REUSEPORT`. It prints the startup
//! lines once, restarts a worker that dies (with a growing back-off, logged),
//! relays SIGINT/SIGTERM as SIGTERM for a graceful stop of all, and gives up (exit
//! non-zero) only when workers die again and again right after starting.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::config::Config;
use crate::listener::{self, ListenError};
use crate::server::{self, Role};

/// How often the supervisor looks at signals and children.
const POLL: Duration = Duration::from_millis(20);
/// A worker that dies sooner than this after starting counts as failing to start.
const QUICK_DEATH: Duration = Duration::from_secs(3);
/// Consecutive quick deaths of one worker after which the supervisor gives up.
const MAX_QUICK_DEATHS: u32 = 5;
/// First restart delay; doubles with each quick death.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Time after `shutdown_timeout` before stragglers are killed.
const STOP_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("cannot start worker {index}: {source}")]
    Fork {
        index: usize,
        source: std::io::Error,
    },
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
    #[error("cannot set up the metrics: {0}")]
    Metrics(std::io::Error),
    #[error("worker {index} failed to start")]
    Startup { index: usize },
    #[error("worker {index} keeps dying right after it starts ({deaths} times); giving up")]
    Unstable { index: usize, deaths: u32 },
}

struct Worker {
    pid: Option<libc::pid_t>,
    started: Instant,
    quick_deaths: u32,
    restart_at: Option<Instant>,
}

/// Runs `count` worker processes until a stop signal (or until they cannot be
/// kept alive).
pub fn run(mut config: Config, count: usize) -> Result<(), SupervisorError> {
    println!("Starting pyrs server...");
    let addr = listener::resolve(&config.http_listen_address, config.http_listen_port)?;
    // Held until exit: keeps the port ours between worker restarts.
    let (_reservation, bound) = listener::reserve(addr)?;
    config.http_listen_port = bound.port();
    let _metrics_reservation = reserve_metrics(&mut config, count)?;

    let signals = Arc::new(AtomicUsize::new(0));
    let reopens = Arc::new(AtomicUsize::new(0));
    // SAFETY: as below.
    unsafe {
        let reopens = reopens.clone();
        signal_hook::low_level::register(libc::SIGUSR1, move || {
            reopens.fetch_add(1, Ordering::SeqCst);
        })
    }
    .map_err(SupervisorError::Signals)?;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let signals = signals.clone();
        // SAFETY: the action only increments an atomic, which is async-signal-safe.
        unsafe {
            signal_hook::low_level::register(sig, move || {
                signals.fetch_add(1, Ordering::SeqCst);
            })
        }
        .map_err(SupervisorError::Signals)?;
    }

    let mut workers = Vec::with_capacity(count);
    let mut ready_pipes = Vec::with_capacity(count);
    for index in 0..count {
        let (pid, ready) = spawn(&config, index, true)
            .map_err(|source| SupervisorError::Fork { index, source })?;
        workers.push(Worker {
            pid: Some(pid),
            started: Instant::now(),
            quick_deaths: 0,
            restart_at: None,
        });
        ready_pipes.push(ready);
    }
    for (index, pipe) in ready_pipes.into_iter().enumerate() {
        let mut byte = [0u8; 1];
        let ok = pipe
            .map(std::fs::File::from)
            .is_some_and(|mut f| matches!(f.read(&mut byte), Ok(1)));
        if !ok {
            // The worker printed why; stop the others and report.
            stop_all(&mut workers, libc::SIGKILL, Duration::from_secs(2));
            return Err(SupervisorError::Startup { index });
        }
    }
    println!("Address: {}", config.http_listen_address);
    println!("Port: {}", bound.port());
    if let Some(address) = &config.metrics_address {
        println!("Metrics: http://{address}/metrics");
    }
    println!("Workers: {count}");
    println!("Listening...");
    let _ = std::io::stdout().flush();

    let stop_timeout = Duration::from_secs_f64(config.shutdown_timeout) + STOP_GRACE;
    let mut seen_signals = 0;
    let mut seen_reopens = 0;
    let mut stop_deadline: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let reopen = reopens.load(Ordering::SeqCst);
        if reopen > seen_reopens {
            seen_reopens = reopen;
            signal_all(&workers, libc::SIGUSR1);
        }
        let signalled = signals.load(Ordering::SeqCst);
        if signalled > seen_signals {
            seen_signals = signalled;
            if stop_deadline.is_some() {
                eprintln!("pyrs: second signal, exiting now");
                signal_all(&workers, libc::SIGKILL);
                std::process::exit(130);
            }
            println!("Stopping pyrs server...");
            signal_all(&workers, libc::SIGTERM);
            stop_deadline = Some(now + stop_timeout);
        }
        reap(&mut workers, stop_deadline.is_some())?;
        match stop_deadline {
            Some(deadline) => {
                if workers.iter().all(|w| w.pid.is_none()) {
                    return Ok(());
                }
                if now >= deadline {
                    eprintln!("pyrs: workers still running after shutdown_timeout; killing them");
                    signal_all(&workers, libc::SIGKILL);
                }
            }
            None => {
                for (index, w) in workers.iter_mut().enumerate() {
                    if w.restart_at.is_some_and(|t| now >= t) {
                        w.restart_at = None;
                        match spawn(&config, index, false) {
                            Ok((pid, _)) => {
                                w.pid = Some(pid);
                                w.started = Instant::now();
                                if let Some(region) = crate::metrics::Region::get() {
                                    region.count_restart();
                                }
                            }
                            Err(e) => {
                                eprintln!("pyrs: cannot restart worker {index}: {e}");
                                w.restart_at = Some(now + MAX_BACKOFF);
                            }
                        }
                    }
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// With `metrics_address`: maps the shared counters before any fork, and holds
/// the metrics port (port 0 picks one for all workers), which `config` then names.
fn reserve_metrics(
    config: &mut Config,
    count: usize,
) -> Result<Option<socket2::Socket>, SupervisorError> {
    let Some(address) = &config.metrics_address else {
        return Ok(None);
    };
    crate::metrics::Region::install(count, config.thread_count)
        .map_err(SupervisorError::Metrics)?;
    let addr = std::net::ToSocketAddrs::to_socket_addrs(address.as_str())
        .map_err(SupervisorError::Metrics)?
        .next()
        .ok_or_else(|| SupervisorError::Metrics(std::io::Error::other("no address")))?;
    let (socket, bound) = listener::reserve(addr)?;
    config.metrics_address = Some(bound.to_string());
    Ok(Some(socket))
}

/// Collects exited workers and schedules their restart (unless stopping).
fn reap(workers: &mut [Worker], stopping: bool) -> Result<(), SupervisorError> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid pointer to a local int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return Ok(());
        }
        let Some((index, w)) = workers
            .iter_mut()
            .enumerate()
            .find(|(_, w)| w.pid == Some(pid))
        else {
            continue;
        };
        w.pid = None;
        if stopping {
            continue;
        }
        let lived = w.started.elapsed();
        if lived < QUICK_DEATH {
            w.quick_deaths += 1;
        } else {
            w.quick_deaths = 0;
        }
        if w.quick_deaths >= MAX_QUICK_DEATHS {
            let deaths = w.quick_deaths;
            stop_all(workers, libc::SIGTERM, Duration::from_secs(5));
            return Err(SupervisorError::Unstable { index, deaths });
        }
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << w.quick_deaths.min(16))
            .min(MAX_BACKOFF);
        eprintln!(
            "pyrs: worker {index} (pid {pid}) {}; restarting it in {} ms",
            describe_exit(status),
            backoff.as_millis()
        );
        w.restart_at = Some(Instant::now() + backoff);
    }
}

fn describe_exit(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("was killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("ended (status {status})")
    }
}

fn signal_all(workers: &[Worker], sig: libc::c_int) {
    for pid in workers.iter().filter_map(|w| w.pid) {
        // SAFETY: kill(2) on a child we started and have not reaped.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Signals every worker and waits (bounded) for them to exit.
fn stop_all(workers: &mut [Worker], sig: libc::c_int, wait: Duration) {
    signal_all(workers, sig);
    let deadline = Instant::now() + wait;
    while workers.iter().any(|w| w.pid.is_some()) && Instant::now() < deadline {
        let _ = reap(workers, true);
        std::thread::sleep(POLL);
    }
    signal_all(workers, libc::SIGKILL);
    let _ = reap(workers, true);
}

/// Forks worker `index`. The child never returns: it runs the server and exits.
/// With `want_ready`, the parent gets a pipe that carries one byte once the worker
/// listens (EOF if it fails first).
fn spawn(
    config: &Config,
    index: usize,
    want_ready: bool,
) -> std::io::Result<(libc::pid_t, Option<OwnedFd>)> {
    let (read_end, write_end) = if want_ready {
        let mut fds = [0; 2];
        // SAFETY: pipe2 with a valid two-int array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors are new and owned by nobody else.
        unsafe {
            (
                Some(OwnedFd::from_raw_fd(fds[0])),
                Some(OwnedFd::from_raw_fd(fds[1])),
            )
        }
    } else {
        (None, None)
    };
    // Buffered output must not be written twice, once by each process.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // The parent is single-threaded here (no thread was ever started in it), so the
    // child may run arbitrary code after fork.
    let pid = crate::python::fork();
    match pid {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            drop(read_end);
            // SAFETY: prctl/getppid have no memory preconditions. A worker must not
            // outlive its supervisor.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
            }
            let role = Role::Worker {
                index,
                ready: write_end,
            };
            let code = match server::run(config.clone(), role) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("pyrs: {e}");
                    1
                }
            };
            let _ = std::io::stdout().flush();
            std::process::exit(code);
        }
        pid => Ok((pid, read_end)),
    }
}
