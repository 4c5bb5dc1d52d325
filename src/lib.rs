//! pyrs: an HTTP/1.1 server with a Rust core and Python handlers.
//!
//! `main.rs` parses the command line ([`cli`], [`config`]) and calls
//! [`server::run`] (or [`supervisor`] for several worker processes), which starts
//! the Python worker thread ([`python`], the only code that touches Python), binds
//! one `SO_REUSEPORT` listener per reactor ([`listener`]), and runs `thread_count`
//! reactor threads ([`reactor`]) that frame requests ([`conn`], using the
//! `pyrs-parser` crate, with buffers from [`buffers`] and responses queued in
//! [`output`]), route them ([`router`]), answer what needs no Python
//! ([`response`], static files from [`statics`]), and hand the rest to the
//! worker in batches ([`dispatch`]). Each reactor notes its requests ([`tap`])
//! for the access log ([`access_log`]) and the Prometheus metrics ([`metrics`]).
//! Over HTTPS, [`tls`] sits between the socket and the connection's buffers;
//! an upgraded connection speaks WebSocket through [`ws`]. A request body too
//! large to wait for reaches its WSGI or ASGI app as it arrives ([`upload`]).

pub mod access_log;
pub mod buffers;
pub mod cli;
pub mod config;
pub mod conn;
pub mod date;
pub mod dispatch;
pub mod entry;
pub mod handoff;
pub mod listener;
pub mod log;
pub mod metrics;
pub mod output;
pub mod python;
pub mod reactor;
pub mod response;
pub mod router;
pub mod server;
pub mod statics;
pub mod supervisor;
pub mod tap;
pub mod tls;
pub mod upload;
pub mod watch;
pub mod ws;
