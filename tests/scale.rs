//! Many connections at once: 2000 concurrent connections served, running out of
//! file descriptors survived (clients wait in the backlog and are all answered),
//! and 10 000 idle connections costing at most 40 MiB. Uses `tests/fixtures/abuse`
//! (`scale.pyrs`, `emfile.pyrs`). The descriptor limit is raised here as far as
//! the machine allows; a test that cannot get what it needs says so and skips.
//! Memory and descriptors are read from `/proc/<pid>/`, so this file is Linux-only
//! like the server.

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{fixture, get, open_fds, rss_kib, wait_fds_at_most, Conn, Server, MIB};

fn start(name: &str) -> Server {
    Server::start(&fixture(&format!("abuse/{name}.pyrs")))
}

/// Sets the soft `RLIMIT_NOFILE` of `pid` (0: this process), keeping its hard limit.
fn set_nofile(pid: i32, soft: u64) {
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: nofile(pid).1,
    };
    // SAFETY: `new` is a valid rlimit; the old value is not asked for.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(
        rc,
        0,
        "prlimit({pid}, RLIMIT_NOFILE, {soft}): {}",
        io::Error::last_os_error()
    );
}

/// The soft and hard `RLIMIT_NOFILE` of `pid` (0: this process).
fn nofile(pid: i32) -> (u64, u64) {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit(2) with a null new limit only fills `cur`.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut cur) };
    assert_eq!(rc, 0, "prlimit({pid}): {}", io::Error::last_os_error());
    (cur.rlim_cur, cur.rlim_max)
}

/// Raises the descriptor limit of `pid` (0: this process) towards `want`: the hard
/// limit too where allowed (root with CAP_SYS_RESOURCE), else up to the hard
/// limit. Never lowers it (tests run in parallel threads of one process). Returns
/// the soft limit now in force.
fn raise_nofile(pid: i32, want: u64) -> u64 {
    let (soft, hard) = nofile(pid);
    if soft >= want {
        return soft;
    }
    let new = libc::rlimit {
        rlim_cur: want,
        rlim_max: hard.max(want),
    };
    // SAFETY: `new` is a valid rlimit; the old value is not asked for.
    if unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) } != 0 {
        // No CAP_SYS_RESOURCE (a container): the hard limit is as far as it goes.
        set_nofile(pid, hard.min(want).max(soft));
    }
    nofile(pid).0
}

/// Raises this process's `RLIMIT_NOFILE` towards 30 000 (pyrs, started after,
/// inherits it); false, with a message, when it stays below `need`, so the test
/// can skip instead of failing for the machine's sake.
fn enough_descriptors(test: &str, need: u64) -> bool {
    let own = raise_nofile(0, 30_000);
    if own < need {
        eprintln!(
            "SKIPPED {test}: needs RLIMIT_NOFILE >= {need}, and this process could \
             raise its soft limit only to {own} (hard limit {})",
            nofile(0).1
        );
        return false;
    }
    true
}

#[test]
fn two_thousand_concurrent_connections_are_served() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 500;
    // 2000 client sockets here and 2000 in pyrs, plus what parallel tests hold.
    if !enough_descriptors(
        "two_thousand_concurrent_connections_are_served",
        (THREADS * PER_THREAD + 1000) as u64,
    ) {
        return;
    }
    // scale.pyrs: a deep backlog, so 2000 connects do not wait for SYN retries.
    let s = start("scale");
    let addr = s.addr();
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut conns: Vec<Conn> = (0..PER_THREAD).map(|_| Conn::connect(addr)).collect();
                // All 2000 are open before any request is sent, and stay open.
                barrier.wait();
                let mut answered = 0;
                for round in 0..2 {
                    for (i, c) in conns.iter_mut().enumerate() {
                        if (i + round) % 2 == 0 {
                            c.send(&get(&format!("/text?{t}-{i}-{round}")));
                        } else {
                            c.send(&get("/nope"));
                        }
                    }
                    for (i, c) in conns.iter_mut().enumerate() {
                        let r = c.read_response();
                        if (i + round) % 2 == 0 {
                            r.assert_basics(200);
                            assert_eq!(r.text(), format!("ok {t}-{i}-{round}"));
                        } else {
                            r.assert_basics(404);
                        }
                        answered += 1;
                    }
                    barrier.wait();
                }
                answered
            })
        })
        .collect();
    let answered: usize = threads.into_iter().map(|t| t.join().expect("client")).sum();
    assert_eq!(answered, 2 * THREADS * PER_THREAD, "responses checked");
}

#[test]
fn running_out_of_file_descriptors_is_survived() {
    const CLIENTS: usize = 40;
    const SPARE: u64 = 8;
    let mut s = start("emfile");
    let pid = s.pid();
    s.get("/text").assert_basics(200);
    // Only SPARE more descriptors for the server: most clients must wait in the
    // listen backlog (256) until earlier ones are done.
    let open = open_fds(pid);
    let limit = (0..)
        .find(|&l| l - open.iter().filter(|&&fd| fd < l).count() as u64 == SPARE)
        .expect("a limit");
    set_nofile(pid, limit);
    let mut pending: Vec<(usize, TcpStream, Vec<u8>)> = (0..CLIENTS)
        .map(|i| {
            let mut c = s.connect().stream;
            c.write_all(
                format!("GET /text?{i} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .expect("send");
            c.set_nonblocking(true).expect("nonblocking");
            (i, c, Vec::new())
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut chunk = [0u8; 4096];
    while !pending.is_empty() && Instant::now() < deadline {
        pending.retain_mut(|(i, c, got)| loop {
            match c.read(&mut chunk) {
                Ok(0) => {
                    let text = String::from_utf8_lossy(got);
                    assert!(
                        text.starts_with("HTTP/1.1 200 ") && text.ends_with(&format!("ok {i}")),
                        "client {i} got {text:?}"
                    );
                    // Closing frees the server's descriptor for a waiting client.
                    return false;
                }
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) => panic!("client {i}: {e}; stderr:\n{}", s.stderr()),
            }
        });
        thread::sleep(Duration::from_millis(5));
    }
    assert!(
        pending.is_empty(),
        "{} of {CLIENTS} clients never answered; stderr:\n{}",
        pending.len(),
        s.stderr()
    );
    s.assert_running();
    assert!(
        s.stderr().contains("accept failed"),
        "the test did not exhaust the server's descriptors; stderr:\n{}",
        s.stderr()
    );
    s.get("/text").assert_basics(200);
}

#[test]
fn ten_thousand_idle_connections_cost_at_most_40_mib() {
    const CONNS: usize = 10_000;
    const THREADS: usize = 4;
    const BATCH: usize = 250;
    // Both ends need 10 000 descriptors (and parallel tests some more); pyrs
    // inherits this process's limit.
    if !enough_descriptors("ten_thousand_idle_connections_cost_at_most_40_mib", 16_000) {
        return;
    }
    let s = start("scale");
    let pid = s.pid();
    let child = raise_nofile(pid, 30_000);
    assert!(
        child > CONNS as u64 + 100,
        "RLIMIT_NOFILE of pyrs is {child}, below this process's"
    );
    let addr = s.addr();
    // Opens `n` connections in batches, each completing one request, and keeps them.
    let open = move |n: usize, tag: usize| -> Vec<Conn> {
        let mut kept = Vec::with_capacity(n);
        while kept.len() < n {
            let mut batch: Vec<Conn> = (0..BATCH.min(n - kept.len()))
                .map(|_| Conn::connect(addr))
                .collect();
            for c in &mut batch {
                c.send(&get(&format!("/text?{tag}")));
            }
            for c in &mut batch {
                let r = c.read_response();
                assert_eq!(r.status, 200);
            }
            kept.extend(batch);
        }
        kept
    };
    // Warm up: pools, Python, the allocator; then close them all.
    drop(open(500, 0));
    assert!(wait_fds_at_most(pid, 64, Duration::from_secs(5)) <= 64);
    thread::sleep(Duration::from_millis(300));
    let before = rss_kib(pid);
    let started = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| thread::spawn(move || open(CONNS / THREADS, t + 1)))
        .collect();
    let mut conns: Vec<Conn> = Vec::with_capacity(CONNS);
    for t in threads {
        conns.extend(t.join().expect("client thread"));
    }
    let opened_in = started.elapsed();
    thread::sleep(Duration::from_millis(500));
    let fds = open_fds(pid).len();
    let after = rss_kib(pid);
    let grown = after.saturating_sub(before);
    eprintln!(
        "10k idle: {CONNS} connections opened in {opened_in:?}; server has {fds} fds; \
         VmRSS {before} KiB before, {after} KiB after: +{grown} KiB ({} bytes per connection)",
        grown * 1024 / CONNS as u64
    );
    assert!(fds >= CONNS, "the server holds only {fds} descriptors");
    assert!(
        grown <= 40 * MIB,
        "{CONNS} idle connections added {grown} KiB of RSS"
    );
    // They are still alive and served.
    for c in conns.iter_mut().step_by(500) {
        c.request(&get("/nope")).assert_basics(404);
    }
}
