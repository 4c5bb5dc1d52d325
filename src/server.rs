//! Startup and shutdown, on the main thread: starts the Python worker and waits
//! until every handler is resolved, binds the listeners, starts the reactor threads
//! and a signal thread, prints the startup lines, and on SIGINT/SIGTERM lets every
//! reactor finish the requests it has (bounded by `shutdown_timeout`) before
//! returning. A second signal exits at once; SIGUSR1 reopens a file access log.
//! It also starts the access log thread and the metrics thread when configured.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use pyrs_parser::{Limits, DEFAULT_MAX_REQUEST_LINE};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;
use thiserror::Error;

use crate::access_log::{self, AccessLog};
use crate::config::{Config, ConfigError};
use crate::dispatch::{Handle, WorkerWakeup};
use crate::listener::{self, ListenError, ListenSet};
use crate::log;
use crate::metrics::{self, Region};
use crate::python;
use crate::reactor::{Reactor, Settings};
use crate::router::Router;
use crate::statics::Mount;
use crate::tap::Tap;
use crate::tls::Acceptor;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("cannot start {what}: {source}")]
    Start {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the Python worker stopped during startup")]
    WorkerDied,
}

/// Extra time after `shutdown_timeout` for shutdown hooks and final output.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

fn start_err(what: &'static str) -> impl FnOnce(std::io::Error) -> ServerError {
    move |source| ServerError::Start { what, source }
}

/// Opens every static mount's folder; a folder that cannot be opened is an
/// error at its `dir` in the project file.
fn open_mounts(config: &Config) -> Result<Arc<[Mount]>, ServerError> {
    let mut mounts = Vec::with_capacity(config.statics.len());
    for (index, entry) in config.statics.iter().enumerate() {
        let mount = Mount::open(entry).map_err(|e| {
            // Names the file, `PYRS_STATIC` or `--static`, wherever it came from.
            config.key_error(
                "static",
                &format!("static[{index}].dir"),
                Some(entry.location),
                format!("cannot open {}: {e}", entry.dir.display()),
            )
        })?;
        mounts.push(mount);
    }
    Ok(mounts.into())
}

/// Compiles `access_log_format` (or the default) and starts the access log.
fn start_access_log(config: &Config, worker: usize) -> Result<Option<AccessLog>, ServerError> {
    let spec = config
        .access_log_format
        .as_deref()
        .unwrap_or(access_log::DEFAULT_FORMAT);
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: config.file.clone(),
        location: None,
        key: key.to_owned(),
        message,
    };
    let format = access_log::Format::parse(spec).map_err(|m| invalid("access_log_format", m))?;
    AccessLog::start(&config.access_log, format, worker).map_err(|e| {
        let message = match &config.access_log {
            crate::config::AccessLog::File(path) => format!("cannot open {}: {e}", path.display()),
            _ => format!("cannot start the access log: {e}"),
        };
        invalid("access_log", message).into()
    })
}

/// Whether this process is the whole server or one of several worker processes.
#[derive(Debug)]
pub enum Role {
    /// The only process: prints every startup line and handles SIGINT and SIGTERM.
    Single,
    /// Worker `index` under a supervisor, which prints the startup lines once and
    /// turns SIGINT into SIGTERM for its workers. Worker 0 prints the routes.
    Worker {
        index: usize,
        /// The slots it writes in the shared metrics (see `supervisor.rs`).
        metrics_slot: usize,
        /// The supervisor's sockets this worker accepts on, one per reactor.
        listeners: ListenSet,
        /// To the supervisor: [`READY`] once listening, then [`RECYCLE_ME`] once
        /// `max_requests` requests were served.
        status: std::fs::File,
        /// Requests after which this worker asks to be replaced; 0 is never.
        max_requests: u64,
    },
}

/// Written by a worker to its status pipe once it listens.
pub const READY: u8 = b'R';
/// Written by a worker that served its `max_requests`: the supervisor starts its
/// successor and then retires it.
pub const RECYCLE_ME: u8 = b'M';
/// How often a worker compares the requests it served with `max_requests`.
const RECYCLE_CHECK: Duration = Duration::from_millis(100);

/// Requests one reactor has framed, written only by that reactor (once per loop
/// round) and read by the worker's recycling check. Aligned to its own cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Served(pub AtomicU64);

/// Blocks (`hold`) or unblocks SIGTERM and SIGUSR2 for the calling thread and
/// the threads it starts from then on. A worker holds them from its fork until
/// its own handlers are in place: one that arrives meanwhile (the supervisor
/// died, or stops or retires it) stays pending instead of reaching the
/// supervisor's handlers the worker inherited, and is handled once it can be.
pub fn hold_stop_signals(hold: bool) {
    // SAFETY: a signal set on the stack, filled by sigemptyset/sigaddset before
    // use; pthread_sigmask only changes this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        let how = if hold {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Runs the server until a graceful stop completes.
pub fn run(config: Config, mut role: Role) -> Result<(), ServerError> {
    let single = matches!(role, Role::Single);
    if single {
        // Until the signal thread takes it, SIGUSR1 (logrotate's "reopen") must not
        // end a server that is still starting. (A worker process inherits the
        // supervisor's handler, which signal-hook then reuses: not for workers.)
        // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
        unsafe {
            libc::signal(libc::SIGUSR1, libc::SIG_IGN);
        }
    }
    if single {
        println!("Starting pyrs server...");
    } else {
        // The supervisor relays SIGINT as SIGTERM; a terminal's Ctrl-C reaches the
        // whole process group, and must not count as a second signal here.
        // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
        }
    }
    let announce_routes = match &role {
        Role::Single => true,
        Role::Worker { index, .. } => *index == 0,
    };
    let (worker_index, metrics_slot) = match &role {
        Role::Single => (0, 0),
        Role::Worker {
            index,
            metrics_slot,
            ..
        } => (*index, *metrics_slot),
    };
    log::init();
    // Read here, in each new worker, so that a reload reads renewed files.
    let tls = Acceptor::from_config(&config)?;
    let config = Arc::new(config);
    let queued = Arc::new(AtomicUsize::new(0));
    let wakeup = Arc::new(WorkerWakeup::new().map_err(start_err("the worker wakeup"))?);

    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let (wiring_tx, wiring_rx) = crossbeam_channel::bounded::<Vec<Handle>>(1);
    let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
    let (worker_done_tx, worker_done_rx) = crossbeam_channel::bounded::<()>(1);
    {
        let config = config.clone();
        let queued = queued.clone();
        let wakeup = wakeup.clone();
        thread::Builder::new()
            .name("pyrs-python".into())
            .spawn(move || {
                let channels = python::Channels {
                    ready: ready_tx,
                    wiring: wiring_rx,
                    jobs: jobs_rx,
                };
                python::run(config, channels, queued, wakeup, announce_routes);
                let _ = worker_done_tx.send(());
            })
            .map_err(start_err("the Python worker thread"))?;
    }
    let streamed: Arc<[bool]> = match ready_rx.recv() {
        Ok(Ok(streamed)) => streamed.into(),
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return Err(ServerError::WorkerDied),
    };

    if announce_routes {
        for entry in &config.statics {
            println!(
                "Added static route {} from {}",
                entry.path,
                entry.dir.display()
            );
        }
    }
    // Removes a Unix socket's file when the server returns.
    let mut _socket_file = None;
    let listeners = match &mut role {
        Role::Worker { listeners, .. } => std::mem::take(listeners).into_listeners(),
        Role::Single => {
            let addr = listener::resolve(&config.http_listen_address, config.http_listen_port)?;
            let mut opened = listener::open(&addr, 1, config.thread_count, config.listen_backlog)?;
            println!("Address: {}", config.http_listen_address);
            if let listener::Address::Tcp(bound) = opened.bound {
                println!("Port: {}", bound.port());
            }
            _socket_file = opened.file.take();
            opened.sets.pop().unwrap_or_default().into_listeners()
        }
    };

    let router = Arc::new(Router::with_static(
        config.modules.iter().map(|m| m.path.as_str()),
        config.statics.iter().map(|s| s.path.as_str()),
    ));
    let mounts = open_mounts(&config)?;
    let limits = Limits {
        max_head: config.max_head_size,
        max_request_line: DEFAULT_MAX_REQUEST_LINE.min(config.max_head_size),
        max_body: config.max_body_size,
    };
    let access_log = start_access_log(&config, worker_index)?;
    // Worker processes find the region their supervisor made before forking them.
    let region = match &config.metrics_address {
        Some(_) => Some(match Region::get() {
            Some(r) => r,
            None => Region::install(1, config.thread_count).map_err(start_err("the metrics"))?,
        }),
        None => None,
    };
    if let (Some(address), Some(region)) = (&config.metrics_address, region) {
        let (l, bound) = metrics::bind(address).map_err(|e| ConfigError::Invalid {
            file: config.file.clone(),
            location: None,
            key: "metrics_address".to_owned(),
            message: format!("cannot listen on {address}: {e}"),
        })?;
        let dropped = access_log.as_ref().map(AccessLog::dropped);
        metrics::serve(region, metrics_slot, l, queued.clone(), dropped)
            .map_err(start_err("the metrics thread"))?;
        if single {
            println!("Metrics: http://{bound}/metrics");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let retiring = Arc::new(AtomicBool::new(false));
    let served: Arc<[Served]> = (0..listeners.len()).map(|_| Served::default()).collect();
    let secs = Duration::from_secs_f64;
    let per_reactor_connections = config.max_connections.div_ceil(config.thread_count).max(1);
    let mut reactors = Vec::with_capacity(listeners.len());
    let mut handles = Vec::with_capacity(listeners.len());
    for (id, l) in listeners.into_iter().enumerate() {
        let settings = Settings {
            id,
            router: router.clone(),
            mounts: mounts.clone(),
            limits,
            tcp_nodelay: config.tcp_nodelay,
            shutdown_timeout: secs(config.shutdown_timeout),
            header_timeout: secs(config.header_timeout),
            keepalive_timeout: secs(config.keepalive_timeout),
            body_timeout: secs(config.body_timeout),
            max_websocket_message: config.max_websocket_message,
            websocket_ping: secs(config.websocket_ping_interval),
            max_connections: per_reactor_connections,
            max_pipelined: config.max_pipelined,
            max_write_buffer: config.max_write_buffer,
            max_queued: config.max_queued_requests,
            shed_queued: config.shed_queued_requests,
            queued: queued.clone(),
            wakeup: wakeup.clone(),
            retiring: retiring.clone(),
            served: served.clone(),
            tap: Tap::new(
                access_log.as_ref().map(AccessLog::sink),
                region.map(|r| r.counters(metrics_slot, id)),
            ),
            tls: tls.clone(),
            streamed: streamed.clone(),
        };
        let (reactor, handle) = Reactor::new(settings, l, jobs_tx.clone(), stop.clone())
            .map_err(start_err("a reactor"))?;
        reactors.push(reactor);
        handles.push(handle);
    }
    drop(jobs_tx);

    // SIGUSR2 (from the supervisor) retires a worker: it stops accepting, its
    // successor accepts on the same sockets, and its keep-alive connections
    // close at their next response. SIGHUP reloads only under a supervisor; a
    // single process says so and goes on.
    let stop_signals: &[i32] = if single {
        &[SIGINT, SIGTERM, SIGHUP]
    } else {
        &[SIGTERM, SIGUSR2]
    };
    let mut signals = Signals::new(stop_signals).map_err(start_err("signal handling"))?;
    // Registered even without a file log: SIGUSR1 must not end the process.
    signals
        .add_signal(SIGUSR1)
        .map_err(start_err("signal handling"))?;
    let reopen = access_log.as_ref().map(AccessLog::reopener);
    let stopped_at: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    {
        let stop = stop.clone();
        let stopped_at = stopped_at.clone();
        let retiring = retiring.clone();
        let bells: Vec<_> = handles.iter().map(|h| h.bell.clone()).collect();
        thread::Builder::new()
            .name("pyrs-signals".into())
            .spawn(move || {
                let mut seen = 0;
                for signal in signals.forever() {
                    if signal == SIGHUP {
                        eprintln!(
                            "pyrs: SIGHUP ignored: reloading needs a supervisor \
                             (workers 2 or more, or --reload)"
                        );
                        continue;
                    }
                    if signal == SIGUSR2 {
                        retiring.store(true, Ordering::Release);
                    }
                    if signal == SIGUSR1 {
                        if let Some(r) = &reopen {
                            r.reopen();
                        }
                        continue;
                    }
                    seen += 1;
                    if seen > 1 {
                        eprintln!("pyrs: second signal, exiting now");
                        std::process::exit(130);
                    }
                    if single {
                        println!("Stopping pyrs server...");
                    }
                    let _ = stopped_at.set(Instant::now());
                    stop.store(true, Ordering::Release);
                    for bell in &bells {
                        bell.wake();
                    }
                }
            })
            .map_err(start_err("the signal thread"))?;
    }
    // A worker's SIGTERM or SIGUSR2 held since the fork reaches the signal
    // thread now.
    hold_stop_signals(false);

    if wiring_tx.send(handles).is_err() {
        return Err(ServerError::WorkerDied);
    }
    let threads = reactors
        .into_iter()
        .map(|r| {
            thread::Builder::new()
                .name("pyrs-reactor".into())
                .spawn(move || r.run())
                .map_err(start_err("a reactor thread"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    match role {
        Role::Single => println!("Listening..."),
        Role::Worker {
            mut status,
            max_requests,
            ..
        } => {
            let _ = status.write_all(&[READY]);
            if max_requests > 0 {
                watch_requests(status, served, max_requests, stop.clone())?;
            }
        }
    }
    let _ = std::io::stdout().flush();

    for t in threads {
        if t.join().is_err() {
            eprintln!("pyrs: a reactor thread panicked");
        }
    }
    // Every reactor dropped its job sender: the worker sees the channel close
    // (woken to notice, wherever it waits).
    wakeup.hang_up();
    // The worker finishes the handlers it is running and the shutdown hooks, but a
    // handler that hangs must not keep the process alive past the stop deadline.
    let timeout = secs(config.shutdown_timeout);
    let deadline = *stopped_at.get_or_init(Instant::now) + timeout + SHUTDOWN_GRACE;
    let wait = deadline.saturating_duration_since(Instant::now());
    if let Err(crossbeam_channel::RecvTimeoutError::Timeout) = worker_done_rx.recv_timeout(wait) {
        eprintln!(
            "pyrs: a handler was still running {:.1} s after the stop signal \
             (shutdown_timeout); exiting without it",
            config.shutdown_timeout
        );
    }
    if let Some(log) = access_log {
        // Every reactor handed its last lines on when it finished.
        log.finish(SHUTDOWN_GRACE);
    }
    let _ = std::io::stdout().flush();
    Ok(())
}

/// Tells the supervisor once this worker's reactors have framed `max_requests`
/// requests, so that it starts a successor and then retires this worker.
fn watch_requests(
    mut status: std::fs::File,
    served: Arc<[Served]>,
    max_requests: u64,
    stop: Arc<AtomicBool>,
) -> Result<(), ServerError> {
    thread::Builder::new()
        .name("pyrs-recycle".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let total: u64 = served.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
                if total >= max_requests {
                    let _ = status.write_all(&[RECYCLE_ME]);
                    return;
                }
                thread::sleep(RECYCLE_CHECK);
            }
        })
        .map(drop)
        .map_err(start_err("the recycling check"))
}
