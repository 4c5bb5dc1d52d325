//! The effective configuration as `pyrs --print-config` prints it: one line
//! per top-level key, in [`TOP_LEVEL_KEYS`] order, `key = value  # origin`.
//! Each value is written as the project file would write it (JSON: strings
//! quoted, `modules` and `static` as one-line arrays, `null` for a feature
//! that is off), and the origin is what
//! [`Origin::describe`](super::Origin::describe) says. It runs on the main
//! thread after the file, the environment and the flags are applied and
//! checked, and only formats text.

use std::fmt::Write;

use super::{AccessLog, ClientAuth, Config, EventLoop, Target, Workers, TOP_LEVEL_KEYS};

impl Config {
    /// Every top-level key with its value and where that came from, one line
    /// each, each ending in `\n`.
    pub fn show(&self) -> String {
        let width = TOP_LEVEL_KEYS
            .iter()
            .map(|key| key.len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for key in TOP_LEVEL_KEYS {
            let origin = self.origins.get(key).describe(&self.file);
            let value = self.value_text(key);
            // Writing into a String cannot fail.
            let _ = writeln!(out, "{key:<width$} = {value}  # {origin}");
        }
        out
    }

    /// The value of top-level key `key`, as the file would write it.
    fn value_text(&self, key: &str) -> String {
        let number = |n: &dyn std::fmt::Display| n.to_string();
        match key {
            "http_listen_address" => json_string(&self.http_listen_address),
            "http_listen_port" => number(&self.http_listen_port),
            "thread_count" => number(&self.thread_count),
            "tcp_nodelay" => number(&self.tcp_nodelay),
            "listen_backlog" => number(&self.listen_backlog),
            "max_body_size" => number(&self.max_body_size),
            "max_head_size" => number(&self.max_head_size),
            "shutdown_timeout" => number(&self.shutdown_timeout),
            "header_timeout" => number(&self.header_timeout),
            "keepalive_timeout" => number(&self.keepalive_timeout),
            "body_timeout" => number(&self.body_timeout),
            "max_connections" => number(&self.max_connections),
            "max_pipelined" => number(&self.max_pipelined),
            "max_write_buffer" => number(&self.max_write_buffer),
            "max_queued_requests" => number(&self.max_queued_requests),
            "shed_queued_requests" => number(&self.shed_queued_requests),
            "event_loop" => json_string(match self.event_loop {
                EventLoop::Auto => "auto",
                EventLoop::Asyncio => "asyncio",
                EventLoop::Uvloop => "uvloop",
            }),
            "workers" => match self.workers {
                Workers::Count(n) => n.to_string(),
                Workers::Auto => json_string("auto"),
            },
            "python_threads" => number(&self.python_threads),
            "max_websocket_message" => number(&self.max_websocket_message),
            "websocket_ping_interval" => number(&self.websocket_ping_interval),
            "access_log" => match &self.access_log {
                AccessLog::Off => "false".to_owned(),
                AccessLog::Stdout => "true".to_owned(),
                AccessLog::File(path) => json_string(&path.to_string_lossy()),
            },
            "access_log_format" => optional(self.access_log_format.as_deref()),
            "metrics_address" => optional(self.metrics_address.as_deref()),
            "max_requests" => number(&self.max_requests),
            "max_requests_jitter" => number(&self.max_requests_jitter),
            "max_worker_memory_mb" => number(&self.max_worker_memory_mb),
            "tls_cert" => optional_path(self.tls_cert.as_deref()),
            "tls_key" => optional_path(self.tls_key.as_deref()),
            "tls_client_ca" => optional_path(self.tls_client_ca.as_deref()),
            "tls_client_auth" => json_string(match self.tls_client_auth {
                ClientAuth::Required => "required",
                ClientAuth::Optional => "optional",
            }),
            "tls_min_version" => json_string(self.tls_min_version.name()),
            "modules" => self.modules_text(),
            "static" => self.statics_text(),
            other => unreachable!("{other:?} is in TOP_LEVEL_KEYS but is not shown"),
        }
    }

    fn modules_text(&self) -> String {
        let entries: Vec<String> =
            self.modules
                .iter()
                .map(|entry| {
                    let path = json_string(&entry.path);
                    match &entry.target {
                        Target::Handler {
                            module,
                            class,
                            handler,
                            websocket,
                        } => format!(
                        "{{\"path\": {path}, \"module\": {}, \"class\": {}, \"handler\": {}{}}}",
                        json_string(module),
                        json_string(class),
                        json_string(handler),
                        if *websocket { ", \"websocket\": true" } else { "" }
                    ),
                        Target::App(app) => format!(
                            "{{\"path\": {path}, \"app\": {}, \"interface\": {}, \"factory\": {}}}",
                            json_string(&format!("{}:{}", app.module, app.attr)),
                            json_string(app.interface.name()),
                            app.factory
                        ),
                    }
                })
                .collect();
        format!("[{}]", entries.join(", "))
    }

    fn statics_text(&self) -> String {
        let entries: Vec<String> = self
            .statics
            .iter()
            .map(|mount| {
                let mut entry = format!(
                    "{{\"path\": {}, \"dir\": {}",
                    json_string(&mount.path),
                    json_string(&mount.dir.to_string_lossy())
                );
                if let Some(seconds) = mount.max_age {
                    let _ = write!(entry, ", \"max_age\": {seconds}");
                }
                if let Some(index) = &mount.index {
                    let _ = write!(entry, ", \"index\": {}", json_string(index));
                }
                let _ = write!(entry, ", \"precompressed\": {}}}", mount.precompressed);
                entry
            })
            .collect();
        format!("[{}]", entries.join(", "))
    }
}

/// A path as a string value, or `null` for none.
fn optional_path(path: Option<&std::path::Path>) -> String {
    path.map_or_else(|| "null".to_owned(), |p| json_string(&p.to_string_lossy()))
}

/// A string value, or `null` for none.
fn optional(text: Option<&str>) -> String {
    text.map_or_else(|| "null".to_owned(), json_string)
}

/// `text` as a JSON string: quoted, with `"`, `\` and control characters
/// escaped.
pub(super) fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
