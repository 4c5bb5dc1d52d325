//! WebSocket echo load for bench/run: `wsload -c CONNS -d SECS [-s SIZE] URL`
//! opens CONNS connections (one thread each), and on each sends a SIZE-byte
//! text message and waits for its echo, back to back, for SECS seconds. It
//! prints its figures in wrk's format (messages count as requests), so that
//! the harness reads them as it reads wrk's; an echo that differs from what was
//! sent, or a connection that fails, is printed as a socket error.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

struct Args {
    conns: usize,
    secs: f64,
    size: usize,
    url: String,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        conns: 32,
        secs: 5.0,
        size: 32,
        url: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "-c" => args.conns = value("-c")?.parse().map_err(|e| format!("-c: {e}"))?,
            "-d" => {
                let v = value("-d")?;
                args.secs = v.trim_end_matches('s').parse().map_err(|e| format!("-d: {e}"))?
            }
            "-s" => args.size = value("-s")?.parse().map_err(|e| format!("-s: {e}"))?,
            url if !url.starts_with('-') => args.url = url.to_owned(),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.url.is_empty() {
        return Err("usage: wsload -c CONNS -d SECS [-s SIZE] ws://HOST:PORT/PATH".into());
    }
    Ok(args)
}

/// What one connection did.
#[derive(Default)]
struct Tally {
    messages: u64,
    errors: u64,
    latencies_us: Vec<u32>,
}

fn connect(url: &str) -> Result<WebSocket<TcpStream>, String> {
    let hostport = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("not a ws:// URL: {url}"))?;
    let stream = TcpStream::connect(hostport).map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    tungstenite::client(url, stream)
        .map(|(ws, _)| ws)
        .map_err(|e| format!("handshake: {e}"))
}

fn run(url: &str, size: usize, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    let mut ws = match connect(url) {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("{e}");
            tally.errors += 1;
            return tally;
        }
    };
    let text: String = "x".repeat(size);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        if ws.send(Message::text(text.clone())).is_err() {
            tally.errors += 1;
            return tally;
        }
        loop {
            match ws.read() {
                Ok(Message::Text(echo)) if echo.as_str() == text => break,
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(_) | Err(_) => {
                    tally.errors += 1;
                    return tally;
                }
            }
        }
        tally.messages += 1;
        let us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
        tally.latencies_us.push(us);
    }
    let _ = ws.close(None);
    tally
}

fn ms(us: u32) -> String {
    format!("{:.2}ms", us as f64 / 1000.0)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("wsload: {e}");
            std::process::exit(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..args.conns)
        .map(|_| {
            let (url, stop) = (args.url.clone(), stop.clone());
            std::thread::spawn(move || run(&url, args.size, &stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(args.secs));
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for t in threads {
        if let Ok(mut t) = t.join() {
            all.messages += t.messages;
            all.errors += t.errors;
            all.latencies_us.append(&mut t.latencies_us);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let at = |p: f64| {
        let n = all.latencies_us.len();
        if n == 0 {
            0
        } else {
            all.latencies_us[((n - 1) as f64 * p).round() as usize]
        }
    };
    println!("Running {:.0}s test @ {}", args.secs, args.url);
    println!("  {} connections, {}-byte text messages echoed", args.conns, args.size);
    println!("  Latency Distribution");
    println!("     50%   {}", ms(at(0.5)));
    println!("     99%   {}", ms(at(0.99)));
    println!("  {} requests in {:.2}s, 0.00MB read", all.messages, secs);
    if all.errors > 0 {
        println!("  Socket errors: connect 0, read {}, write 0, timeout 0", all.errors);
    }
    println!("Requests/sec: {:.2}", all.messages as f64 / secs);
}
