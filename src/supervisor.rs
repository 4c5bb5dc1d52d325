//! Worker processes (`"workers": N`, or `--reload`): the supervisor, on the main
//! thread of the parent process.
//!
//! It owns the listening sockets: it opens one set per worker slot before
//! forking (see `listener.rs`) and keeps them open for its whole life. Each
//! worker runs a whole server — its own reactors, interpreter and handler
//! instances — accepting on its slot's sockets. Because a socket is never closed
//! while it has a successor, replacing a worker loses nothing: the successor is
//! forked with the same sockets, and only once it is ready (listening, startup
//! hooks and ASGI lifespan done) is the old one *retired* (SIGUSR2: it stops
//! accepting, answers what it has with `Connection: close`, and exits). The
//! connections waiting in the accept queue stay in the queue, and the successor
//! takes them. (Had each worker bound its own `SO_REUSEPORT` socket, closing the
//! old one would reset every connection the kernel had already queued on it.)
//!
//! Replacements happen for:
//! - a reload (SIGHUP, or a file change under `--reload`): the project file is
//!   read again and a whole new set of workers started with freshly imported
//!   code; only when every one is ready are the old ones retired. A file that
//!   does not load, or a worker that fails to start, leaves the old ones serving.
//! - recycling: a worker past `max_requests` (it says so on its status pipe) or
//!   past `max_worker_memory_mb` (sampled from `/proc`) gets a successor.
//! - a crash: a worker that dies is restarted, with a growing back-off; the
//!   supervisor gives up (exit non-zero) only when workers die again and again
//!   right after starting.
//!
//! SIGINT/SIGTERM are relayed as SIGTERM for a graceful stop of all, SIGUSR1
//! (reopen the access log) as itself. With `metrics_address`, the supervisor maps
//! the shared counters (`metrics.rs`) and holds the metrics port before the first
//! fork; each worker process writes its own slots (a successor takes the other
//! of its slot's two, so that two processes never write one), and the
//! supervisor counts restarts there. The
//! supervisor starts no thread before it forks (the `--reload` file watcher's
//! thread only sends events on a channel), and never runs Python itself.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::config::{Config, Workers};
use crate::listener::{self, Address, ListenError, Opened};
use crate::server::{self, Role, READY, RECYCLE_ME};

/// How often the supervisor looks at signals, pipes and children.
const POLL: Duration = Duration::from_millis(20);
/// How often workers' resident memory is sampled (`max_worker_memory_mb`).
const MEMORY_CHECK: Duration = Duration::from_secs(1);
/// A worker that dies sooner than this after starting counts as failing to start.
const QUICK_DEATH: Duration = Duration::from_secs(3);
/// Consecutive quick deaths of one worker after which the supervisor gives up.
const MAX_QUICK_DEATHS: u32 = 5;
/// First restart delay; doubles with each quick death.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Time after `shutdown_timeout` before stragglers are killed.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// A reload whose workers are not all ready by then is abandoned.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("cannot start worker {index}: {source}")]
    Fork { index: usize, source: io::Error },
    #[error("cannot handle signals: {0}")]
    Signals(io::Error),
    #[error("cannot set up the metrics: {0}")]
    Metrics(io::Error),
    #[error("worker {index} failed to start")]
    Startup { index: usize },
    #[error("worker {index} keeps dying right after it starts ({deaths} times); giving up")]
    Unstable { index: usize, deaths: u32 },
}

/// Reads the project again, as the command line first did (same file, flags
/// and environment): the configuration a reload starts. The error is printed.
pub type Reload<'a> = dyn FnMut() -> Result<Config, String> + 'a;

/// Asks for a reload without a signal (the `--reload` file watcher).
pub type Trigger = std::sync::mpsc::Receiver<()>;

/// The signals the supervisor acts on, counted by their handlers.
#[derive(Default)]
struct Signals {
    stop: AtomicUsize,
    reload: AtomicUsize,
    reopen: AtomicUsize,
}

/// A forked worker process.
struct Child {
    pid: libc::pid_t,
    /// Read end of its status pipe (non-blocking).
    status: std::fs::File,
    ready: bool,
    started: Instant,
    /// It asked to be replaced (`max_requests`), or is over its memory limit.
    wants_successor: bool,
    /// Which of its slot's two metrics slots it writes.
    parity: usize,
}

/// One worker's place: its sockets (in the generation's [`Opened`]) and the
/// process serving on them.
struct Slot {
    worker: Option<Child>,
    /// Forked to replace `worker`; promoted once ready.
    successor: Option<Child>,
    quick_deaths: u32,
    restart_at: Option<Instant>,
    /// A successor failed to start: no new one before then.
    successor_after: Option<Instant>,
    /// The metrics parity of the worker that died last (its restart takes it).
    parity: usize,
}

/// The workers started from one configuration, and their sockets.
struct Generation {
    config: Config,
    sockets: Rc<Opened>,
    slots: Vec<Slot>,
}

/// A worker told to finish and exit.
struct Retiree {
    pid: libc::pid_t,
    kill_at: Instant,
}

struct Supervisor<'a> {
    live: Generation,
    /// Unix socket files, removed when the supervisor exits.
    _socket_files: Vec<listener::SocketFile>,
    /// A reload's workers, until all are ready (or one fails).
    pending: Option<(Generation, Instant)>,
    retiring: Vec<Retiree>,
    signals: Arc<Signals>,
    /// Holds the metrics port for the workers (and port 0's pick).
    _metrics_port: Option<socket2::Socket>,
    reload: &'a mut Reload<'a>,
    next_memory_check: Instant,
}

/// The number of workers `config` asks for.
pub fn worker_count(config: &Config) -> usize {
    match config.workers {
        Workers::Count(n) => n,
        Workers::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// Runs the workers `config` asks for until a stop signal (or until they cannot
/// be kept alive). `reload` makes the configuration of each reload; `trigger`,
/// if given, asks for reloads too.
pub fn run(
    mut config: Config,
    reload: &mut Reload<'_>,
    trigger: Option<Trigger>,
) -> Result<(), SupervisorError> {
    println!("Starting pyrs server...");
    let count = worker_count(&config);
    let addr = listener::resolve(&config.http_listen_address, config.http_listen_port)?;
    let mut sockets = listener::open(&addr, count, config.thread_count, config.listen_backlog)?;
    config.http_listen_port = sockets.bound.port();
    let socket_files = sockets.file.take().into_iter().collect();
    let metrics_port = reserve_metrics(&mut config, count)?;

    let signals = Arc::new(Signals::default());
    for (sig, counter) in [
        (libc::SIGINT, 0),
        (libc::SIGTERM, 0),
        (libc::SIGHUP, 1),
        (libc::SIGUSR1, 2),
        (libc::SIGUSR2, 3),
    ] {
        let signals = signals.clone();
        // SAFETY: the action only increments an atomic, which is async-signal-safe.
        unsafe {
            signal_hook::low_level::register(sig, move || match counter {
                0 => {
                    signals.stop.fetch_add(1, Ordering::SeqCst);
                }
                1 => {
                    signals.reload.fetch_add(1, Ordering::SeqCst);
                }
                2 => {
                    signals.reopen.fetch_add(1, Ordering::SeqCst);
                }
                // SIGUSR2 is for workers; a supervisor that gets one ignores it.
                _ => {}
            })
        }
        .map_err(SupervisorError::Signals)?;
    }

    let bound = sockets.bound.clone();
    let generation = Generation {
        config,
        sockets: Rc::new(sockets),
        slots: (0..count).map(|_| Slot::empty()).collect(),
    };
    let mut sup = Supervisor {
        live: generation,
        _socket_files: socket_files,
        pending: None,
        retiring: Vec::new(),
        signals,
        _metrics_port: metrics_port,
        reload,
        next_memory_check: Instant::now() + MEMORY_CHECK,
    };
    sup.start()?;
    println!("Address: {}", sup.live.config.http_listen_address);
    if let Address::Tcp(bound) = bound {
        println!("Port: {}", bound.port());
    }
    if let Some(address) = &sup.live.config.metrics_address {
        println!("Metrics: http://{address}/metrics");
    }
    println!("Workers: {count}");
    println!("Listening...");
    let _ = io::stdout().flush();
    sup.serve(trigger)
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            worker: None,
            successor: None,
            quick_deaths: 0,
            restart_at: None,
            successor_after: None,
            parity: 0,
        }
    }
}

impl Generation {
    /// The supervisor's descriptors for this generation: its listening sockets
    /// and its workers' status pipes.
    fn descriptors(&self) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = self.sockets.sets.iter().flat_map(|s| s.raw_fds()).collect();
        for slot in &self.slots {
            for child in slot.worker.iter().chain(slot.successor.iter()) {
                fds.push(child.status.as_raw_fd());
            }
        }
        fds
    }
}

impl Supervisor<'_> {
    /// Starts the first workers and waits until every one is ready.
    fn start(&mut self) -> Result<(), SupervisorError> {
        for index in 0..self.live.slots.len() {
            let child = self.spawn_live(index)?;
            self.live.slots[index].worker = Some(child);
        }
        loop {
            let mut all = true;
            for (index, slot) in self.live.slots.iter_mut().enumerate() {
                let Some(child) = &mut slot.worker else {
                    continue;
                };
                if !child.ready && !read_status(child) {
                    // The worker printed why; stop the others and report.
                    self.stop_now();
                    return Err(SupervisorError::Startup { index });
                }
                all &= child.ready;
            }
            if all {
                return Ok(());
            }
            if self.signals.stop.load(Ordering::SeqCst) > 0 {
                self.stop_now();
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
    }

    fn serve(&mut self, trigger: Option<Trigger>) -> Result<(), SupervisorError> {
        let mut seen_reloads = 0;
        let mut seen_reopens = 0;
        // A file change asks for a reload once changes settle.
        let mut reload_at: Option<Instant> = None;
        loop {
            if self.signals.stop.load(Ordering::SeqCst) > 0 {
                return self.stop_all();
            }
            if let Some(t) = &trigger {
                while t.try_recv().is_ok() {
                    reload_at = Some(Instant::now() + crate::watch::SETTLE);
                }
            }
            let reopens = self.signals.reopen.load(Ordering::SeqCst);
            if reopens > seen_reopens {
                seen_reopens = reopens;
                for pid in self.all_pids() {
                    signal(pid, libc::SIGUSR1);
                }
            }
            let reloads = self.signals.reload.load(Ordering::SeqCst);
            let settled = reload_at.is_some_and(|t| Instant::now() >= t);
            if reloads > seen_reloads || settled {
                seen_reloads = reloads;
                reload_at = None;
                self.begin_reload();
            }
            self.reap()?;
            self.read_pipes();
            self.check_memory();
            self.advance_pending();
            self.advance_successors();
            self.restart_due();
            self.kill_overdue_retirees();
            std::thread::sleep(POLL);
        }
    }

    /// Reads the project again and starts a new generation of workers for it.
    fn begin_reload(&mut self) {
        if self.pending.is_some() {
            eprintln!("pyrs: reload asked while one is in progress; it will use the newest files");
            self.abandon_pending("a newer reload replaces it");
        }
        eprintln!("pyrs: reloading");
        let config = match (self.reload)() {
            Ok(config) => config,
            Err(e) => {
                eprintln!("pyrs: reload failed, the running workers keep serving: {e}");
                return;
            }
        };
        let sockets = match self.sockets_for(&config) {
            Ok(sockets) => sockets,
            Err(e) => {
                eprintln!("pyrs: reload failed, the running workers keep serving: {e}");
                return;
            }
        };
        let mut config = config;
        config.http_listen_port = sockets.bound.port();
        let count = sockets.sets.len();
        let mut generation = Generation {
            config,
            sockets,
            slots: (0..count).map(|_| Slot::empty()).collect(),
        };
        for index in 0..count {
            // Also the new generation's own sockets and pipes made so far.
            let mut inherited = self.inherited();
            inherited.extend(generation.descriptors());
            let parity = self
                .live
                .slots
                .get(index)
                .and_then(|s| s.worker.as_ref())
                .map_or(0, |w| 1 - w.parity);
            match spawn(&generation, index, parity, &inherited) {
                Ok(child) => generation.slots[index].worker = Some(child),
                Err(e) => {
                    eprintln!("pyrs: reload failed, cannot start worker {index}: {e}");
                    retire_generation(&mut generation, &mut self.retiring);
                    return;
                }
            }
        }
        self.pending = Some((generation, Instant::now()));
    }

    /// The sockets a reload's workers use: the live ones when the listening
    /// settings are unchanged (the whole point: nothing queued is lost),
    /// otherwise new ones. A new TCP set on the same port joins the port's
    /// `SO_REUSEPORT` group, so no connection is refused while both exist.
    fn sockets_for(&mut self, config: &Config) -> Result<Rc<Opened>, ListenError> {
        let live = &self.live.config;
        let count = worker_count(config);
        let same_shape = config.thread_count == live.thread_count
            && config.listen_backlog == live.listen_backlog
            && count == self.live.slots.len();
        let requested = listener::resolve(&config.http_listen_address, config.http_listen_port)?;
        let bound = &self.live.sockets.bound;
        let same_address = match (&requested, bound) {
            // Port 0 meant "any": keep the one picked at startup.
            (Address::Tcp(new), Address::Tcp(old)) => {
                new.ip() == old.ip() && (new.port() == 0 || new.port() == old.port())
            }
            (new, old) => new == old,
        };
        if same_address && same_shape {
            return Ok(self.live.sockets.clone());
        }
        if same_address {
            if let Address::Unix(_) = bound {
                // One socket shared by everyone: copies of it, in the new shape.
                let sets = self.live.sockets.reshape(count, config.thread_count);
                return sets.map(Rc::new).map_err(|source| ListenError::Bind {
                    addr: bound.clone(),
                    source,
                });
            }
            eprintln!(
                "pyrs: the reload changes workers, thread_count or listen_backlog: new \
                 sockets; connections queued on the old ones when they close are reset"
            );
            let bound = bound.clone();
            return self.open(&bound, count, config);
        }
        self.open(&requested, count, config)
    }

    fn open(
        &mut self,
        addr: &Address,
        count: usize,
        config: &Config,
    ) -> Result<Rc<Opened>, ListenError> {
        let mut opened = listener::open(addr, count, config.thread_count, config.listen_backlog)?;
        self._socket_files.extend(opened.file.take());
        Ok(Rc::new(opened))
    }

    /// When every worker of a reload is ready, retires the old ones; when one
    /// failed or the reload took too long, abandons it.
    fn advance_pending(&mut self) {
        let Some((generation, started)) = &mut self.pending else {
            return;
        };
        let mut all_ready = true;
        let mut failed = None;
        for (index, slot) in generation.slots.iter_mut().enumerate() {
            match &mut slot.worker {
                Some(child) => {
                    if !child.ready && !read_status(child) {
                        failed = Some(format!("worker {index} failed to start"));
                    }
                    all_ready &= child.ready;
                }
                None => failed = Some(format!("worker {index} exited while starting")),
            }
        }
        if failed.is_none() && !all_ready && started.elapsed() > RELOAD_TIMEOUT {
            failed = Some(format!(
                "its workers were not ready after {} s",
                RELOAD_TIMEOUT.as_secs()
            ));
        }
        if let Some(why) = failed {
            self.abandon_pending(&why);
            return;
        }
        if !all_ready {
            return;
        }
        let Some((generation, started)) = self.pending.take() else {
            return;
        };
        let old = std::mem::replace(&mut self.live, generation);
        let mut old = old;
        retire_generation(&mut old, &mut self.retiring);
        let pids: Vec<String> = self
            .live
            .slots
            .iter()
            .filter_map(|s| s.worker.as_ref().map(|c| c.pid.to_string()))
            .collect();
        eprintln!(
            "pyrs: reloaded in {} ms: workers {} serve the new code; the old ones finish \
             what they have",
            started.elapsed().as_millis(),
            pids.join(", ")
        );
        // The old generation's sockets close here unless the new one shares them;
        // the retirees hold their own copies until they exit.
        drop(old);
    }

    fn abandon_pending(&mut self, why: &str) {
        if let Some((mut generation, _)) = self.pending.take() {
            eprintln!("pyrs: reload failed ({why}); the running workers keep serving");
            retire_generation(&mut generation, &mut self.retiring);
        }
    }

    /// Forks successors for workers that want one, and promotes the ready ones.
    fn advance_successors(&mut self) {
        if self.pending.is_some() {
            // The reload replaces everyone anyway.
            return;
        }
        let inherited = self.inherited();
        let now = Instant::now();
        let stop_after = self.stop_timeout();
        for index in 0..self.live.slots.len() {
            let slot = &mut self.live.slots[index];
            if let Some(successor) = &mut slot.successor {
                if !successor.ready && !read_status(successor) {
                    eprintln!(
                        "pyrs: the replacement for worker {index} failed to start; trying again \
                         in {} s",
                        MAX_BACKOFF.as_secs()
                    );
                    let pid = successor.pid;
                    slot.successor = None;
                    slot.successor_after = Some(now + MAX_BACKOFF);
                    self.retiring.push(Retiree {
                        pid,
                        kill_at: now + stop_after,
                    });
                    continue;
                }
                if successor.ready {
                    let successor = slot.successor.take();
                    if let Some(old) = std::mem::replace(&mut slot.worker, successor) {
                        retire(old.pid, &mut self.retiring, now + stop_after);
                    }
                }
                continue;
            }
            let wants = slot
                .worker
                .as_ref()
                .is_some_and(|w| w.ready && w.wants_successor)
                && slot.successor_after.is_none_or(|t| now >= t);
            if wants {
                let parity = slot.worker.as_ref().map_or(0, |w| 1 - w.parity);
                match spawn(&self.live, index, parity, &inherited) {
                    Ok(child) => self.live.slots[index].successor = Some(child),
                    Err(e) => eprintln!("pyrs: cannot start a replacement for worker {index}: {e}"),
                }
            }
        }
    }

    /// Reads every worker's status pipe (readiness, recycling requests).
    fn read_pipes(&mut self) {
        for (index, slot) in self.live.slots.iter_mut().enumerate() {
            let Some(child) = &mut slot.worker else {
                continue;
            };
            let asked = child.wants_successor;
            read_status(child);
            if child.wants_successor && !asked {
                eprintln!(
                    "pyrs: worker {index} (pid {}) served its max_requests; starting its \
                     replacement",
                    child.pid
                );
            }
        }
    }

    /// Marks workers over `max_worker_memory_mb` for replacement.
    fn check_memory(&mut self) {
        let limit_mb = self.live.config.max_worker_memory_mb;
        let now = Instant::now();
        if limit_mb == 0 || now < self.next_memory_check {
            return;
        }
        self.next_memory_check = now + MEMORY_CHECK;
        for (index, slot) in self.live.slots.iter_mut().enumerate() {
            let Some(child) = &mut slot.worker else {
                continue;
            };
            if !child.ready || child.wants_successor || slot.successor.is_some() {
                continue;
            }
            if let Some(rss) = resident_bytes(child.pid) {
                if rss > limit_mb.saturating_mul(1024 * 1024) {
                    eprintln!(
                        "pyrs: worker {index} (pid {}) uses {} MiB, over max_worker_memory_mb \
                         ({limit_mb}); starting its replacement",
                        child.pid,
                        rss / (1024 * 1024)
                    );
                    child.wants_successor = true;
                }
            }
        }
    }

    /// Collects exited children: schedules restarts of live workers that died.
    fn reap(&mut self) -> Result<(), SupervisorError> {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid pointer to a local int.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return Ok(());
            }
            if let Some(i) = self.retiring.iter().position(|r| r.pid == pid) {
                self.retiring.swap_remove(i);
                continue;
            }
            if let Some((generation, _)) = &mut self.pending {
                if let Some(slot) = find_slot(generation, pid) {
                    eprintln!(
                        "pyrs: a reloading worker (pid {pid}) {}",
                        describe_exit(status)
                    );
                    slot.worker = None;
                    continue;
                }
            }
            let mut unstable = None;
            for (index, slot) in self.live.slots.iter_mut().enumerate() {
                if slot.successor.as_ref().is_some_and(|c| c.pid == pid) {
                    eprintln!(
                        "pyrs: the replacement for worker {index} (pid {pid}) {}",
                        describe_exit(status)
                    );
                    slot.successor = None;
                    break;
                }
                let Some(worker) = slot.worker.take_if(|c| c.pid == pid) else {
                    continue;
                };
                slot.parity = worker.parity;
                let lived = worker.started.elapsed();
                if lived < QUICK_DEATH {
                    slot.quick_deaths += 1;
                } else {
                    slot.quick_deaths = 0;
                }
                if slot.quick_deaths >= MAX_QUICK_DEATHS {
                    unstable = Some((index, slot.quick_deaths));
                    break;
                }
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << slot.quick_deaths.min(16))
                    .min(MAX_BACKOFF);
                if let Some(region) = crate::metrics::Region::get() {
                    region.count_restart();
                }
                eprintln!(
                    "pyrs: worker {index} (pid {pid}) {}; restarting it in {} ms",
                    describe_exit(status),
                    backoff.as_millis()
                );
                // A successor that was starting takes over instead.
                slot.worker = slot.successor.take();
                if slot.worker.is_none() {
                    slot.restart_at = Some(Instant::now() + backoff);
                }
                break;
            }
            if let Some((index, deaths)) = unstable {
                self.stop_now();
                return Err(SupervisorError::Unstable { index, deaths });
            }
        }
    }

    fn restart_due(&mut self) {
        let now = Instant::now();
        for index in 0..self.live.slots.len() {
            if self.live.slots[index].restart_at.is_none_or(|t| now < t) {
                continue;
            }
            self.live.slots[index].restart_at = None;
            match self.spawn_live(index) {
                Ok(child) => self.live.slots[index].worker = Some(child),
                Err(e) => {
                    eprintln!("pyrs: cannot restart worker {index}: {e}");
                    self.live.slots[index].restart_at = Some(now + MAX_BACKOFF);
                }
            }
        }
    }

    fn kill_overdue_retirees(&mut self) {
        let now = Instant::now();
        for r in &self.retiring {
            if now >= r.kill_at {
                eprintln!(
                    "pyrs: retired worker (pid {}) still running after shutdown_timeout; \
                     killing it",
                    r.pid
                );
                signal(r.pid, libc::SIGKILL);
            }
        }
        for r in &mut self.retiring {
            if now >= r.kill_at {
                // Reaped soon; do not signal it again each round.
                r.kill_at = now + Duration::from_secs(3600);
            }
        }
    }

    fn spawn_live(&self, index: usize) -> Result<Child, SupervisorError> {
        let parity = self.live.slots.get(index).map_or(0, |s| s.parity);
        spawn(&self.live, index, parity, &self.inherited())
            .map_err(|source| SupervisorError::Fork { index, source })
    }

    /// Every descriptor the supervisor holds that a new worker must close:
    /// all listening sockets and the other workers' status pipes.
    fn inherited(&self) -> Vec<RawFd> {
        let mut fds = self.live.descriptors();
        if let Some((g, _)) = &self.pending {
            fds.extend(g.descriptors());
        }
        fds
    }

    fn stop_timeout(&self) -> Duration {
        stop_timeout(&self.live.config)
    }

    fn all_pids(&self) -> Vec<libc::pid_t> {
        let mut pids: Vec<_> = self.retiring.iter().map(|r| r.pid).collect();
        let mut generations = vec![&self.live];
        if let Some((g, _)) = &self.pending {
            generations.push(g);
        }
        for g in generations {
            for slot in &g.slots {
                for child in slot.worker.iter().chain(slot.successor.iter()) {
                    pids.push(child.pid);
                }
            }
        }
        pids
    }

    /// Graceful stop: SIGTERM to every worker, then wait for them (bounded by
    /// `shutdown_timeout`). A second signal kills them at once.
    fn stop_all(&mut self) -> Result<(), SupervisorError> {
        println!("Stopping pyrs server...");
        let seen = self.signals.stop.load(Ordering::SeqCst);
        for pid in self.all_pids() {
            signal(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + self.stop_timeout();
        let mut pids = self.all_pids();
        loop {
            pids.retain(|&pid| !reaped(pid));
            if pids.is_empty() {
                return Ok(());
            }
            if self.signals.stop.load(Ordering::SeqCst) > seen {
                eprintln!("pyrs: second signal, exiting now");
                for &pid in &pids {
                    signal(pid, libc::SIGKILL);
                }
                std::process::exit(130);
            }
            if Instant::now() >= deadline {
                eprintln!("pyrs: workers still running after shutdown_timeout; killing them");
                for &pid in &pids {
                    signal(pid, libc::SIGKILL);
                }
                for &pid in &pids {
                    reap_blocking(pid);
                }
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Kills every worker and waits for them (startup failed, or the workers
    /// are unstable).
    fn stop_now(&mut self) {
        let pids = self.all_pids();
        for &pid in &pids {
            signal(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut left = pids;
        while !left.is_empty() && Instant::now() < deadline {
            left.retain(|&pid| !reaped(pid));
            std::thread::sleep(POLL);
        }
        for &pid in &left {
            signal(pid, libc::SIGKILL);
            reap_blocking(pid);
        }
    }
}

impl Opened {
    /// Copies of this (Unix) socket in `sets` sets of `per_set`.
    fn reshape(&self, sets: usize, per_set: usize) -> io::Result<Opened> {
        let first = self
            .sets
            .first()
            .ok_or_else(|| io::Error::other("no socket to share"))?;
        let new_sets = (0..sets)
            .map(|_| first.copies(per_set))
            .collect::<io::Result<_>>()?;
        Ok(Opened {
            sets: new_sets,
            bound: self.bound.clone(),
            // The supervisor holds the file.
            file: None,
        })
    }
}

fn find_slot(generation: &mut Generation, pid: libc::pid_t) -> Option<&mut Slot> {
    generation
        .slots
        .iter_mut()
        .find(|s| s.worker.as_ref().is_some_and(|c| c.pid == pid))
}

/// Retires every worker of `generation` (and successors being started).
fn retire_generation(generation: &mut Generation, retiring: &mut Vec<Retiree>) {
    let kill_at = Instant::now() + stop_timeout(&generation.config);
    for slot in &mut generation.slots {
        for child in slot.worker.take().into_iter().chain(slot.successor.take()) {
            retire(child.pid, retiring, kill_at);
        }
    }
}

/// How long a worker told to stop (or retire) may take before it is killed.
fn stop_timeout(config: &Config) -> Duration {
    Duration::from_secs_f64(config.shutdown_timeout) + STOP_GRACE
}

/// SIGUSR2: stop accepting, finish, exit; killed at `kill_at` if still there.
fn retire(pid: libc::pid_t, retiring: &mut Vec<Retiree>, kill_at: Instant) {
    signal(pid, libc::SIGUSR2);
    retiring.push(Retiree { pid, kill_at });
}

/// Reads what `child` wrote on its status pipe. False once the pipe is closed
/// (the worker exited) before it said it was ready.
fn read_status(child: &mut Child) -> bool {
    let mut buf = [0u8; 16];
    loop {
        match child.status.read(&mut buf) {
            Ok(0) => return child.ready,
            Ok(n) => {
                for &byte in &buf[..n] {
                    match byte {
                        READY => child.ready = true,
                        RECYCLE_ME => child.wants_successor = true,
                        _ => {}
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Resident memory of process `pid`, from `/proc/PID/statm`.
fn resident_bytes(pid: libc::pid_t) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
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

fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) on a child we started and have not reaped.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Whether `pid` has exited (and is now reaped).
fn reaped(pid: libc::pid_t) -> bool {
    let mut status = 0;
    // SAFETY: waitpid with a valid pointer to a local int.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    r == pid || r < 0
}

/// Waits for `pid` (killed) to exit.
fn reap_blocking(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid with a valid pointer to a local int.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

/// A simple per-worker draw in `0..=jitter` (no need for a random crate:
/// workers only must not all reach their limit at once).
fn jitter(jitter: u64, index: usize) -> u64 {
    if jitter == 0 {
        return 0;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    // SplitMix64 of the time and the slot: well spread for neighbouring inputs.
    let mut z = nanos ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z % (jitter + 1)
}

/// Forks the worker for slot `index` of `generation`. The child never returns:
/// it closes the descriptors in `inherited` (keeping copies of its own
/// sockets), runs the server and exits.
fn spawn(
    generation: &Generation,
    index: usize,
    parity: usize,
    inherited: &[RawFd],
) -> io::Result<Child> {
    let config = &generation.config;
    let set = generation
        .sockets
        .sets
        .get(index)
        .ok_or_else(|| io::Error::other("no sockets for this worker"))?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 with a valid two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(read_end.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(
            read_end.as_raw_fd(),
            libc::F_SETFL,
            flags | libc::O_NONBLOCK,
        );
    }
    let max_requests = match config.max_requests {
        0 => 0,
        n => n.saturating_add(jitter(config.max_requests_jitter, index)),
    };
    // Buffered output must not be written twice, once by each process.
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // No other thread of this process runs Python or holds a lock the child
    // needs (the file watcher's thread only sends on a channel).
    let pid = crate::python::fork();
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // SAFETY: prctl/getppid have no memory preconditions. A worker must not
            // outlive its supervisor.
            unsafe {
                // Held until the worker handles them itself (server::run): this
                // process still has the supervisor's handlers, which would
                // swallow a stop or a retire that comes while it starts.
                crate::server::hold_stop_signals(true);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
            }
            let code = run_child(
                config,
                (index, index * 2 + parity),
                set,
                inherited,
                read_end,
                write_end,
                max_requests,
            );
            let _ = io::stdout().flush();
            let _ = io::stderr().flush();
            // SAFETY: the supervisor's state in this process must not be dropped
            // (it would close descriptors it no longer owns here).
            unsafe { libc::_exit(code) }
        }
        pid => {
            drop(write_end);
            Ok(Child {
                pid,
                status: std::fs::File::from(read_end),
                ready: false,
                started: Instant::now(),
                wants_successor: false,
                parity,
            })
        }
    }
}

/// The worker's side of [`spawn`], in the child: returns its exit status.
fn run_child(
    config: &Config,
    (index, metrics_slot): (usize, usize),
    set: &listener::ListenSet,
    inherited: &[RawFd],
    read_end: OwnedFd,
    write_end: OwnedFd,
    max_requests: u64,
) -> i32 {
    drop(read_end);
    let listeners = match set.try_clone() {
        Ok(listeners) => listeners,
        Err(e) => {
            eprintln!("pyrs: worker {index}: cannot take its sockets: {e}");
            return 1;
        }
    };
    for &fd in inherited {
        // SAFETY: these are the supervisor's descriptors, copied into this process
        // by fork; nothing here uses them (its own sockets are the copies above).
        unsafe {
            libc::close(fd);
        }
    }
    let status = std::fs::File::from(write_end);
    // Held until the error is printed: the supervisor, seeing the pipe close,
    // stops a worker that failed to start, and must not cut its message short.
    let keep_open = status.try_clone();
    let role = Role::Worker {
        index,
        metrics_slot,
        listeners,
        status,
        max_requests,
    };
    let config = config.clone();
    let code = match std::panic::catch_unwind(move || server::run(config, role)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("pyrs: {e}");
            1
        }
        Err(_) => 101,
    };
    let _ = io::stderr().flush();
    drop(keep_open);
    code
}

/// With `metrics_address`: maps the shared counters before any fork (two slots
/// per worker, see the module note), and holds the metrics port (port 0 picks
/// one for all workers), which `config` then names.
fn reserve_metrics(
    config: &mut Config,
    count: usize,
) -> Result<Option<socket2::Socket>, SupervisorError> {
    let Some(address) = &config.metrics_address else {
        return Ok(None);
    };
    crate::metrics::Region::install(count * 2, config.thread_count)
        .map_err(SupervisorError::Metrics)?;
    let addr = std::net::ToSocketAddrs::to_socket_addrs(address.as_str())
        .map_err(SupervisorError::Metrics)?
        .next()
        .ok_or_else(|| SupervisorError::Metrics(io::Error::other("no address")))?;
    let (socket, bound) = listener::reserve(addr)?;
    config.metrics_address = Some(bound.to_string());
    Ok(Some(socket))
}
