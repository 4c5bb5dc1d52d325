//! Listening sockets: one per reactor, all bound to the same address with
//! `SO_REUSEPORT` so the kernel spreads new connections across reactors. Built with
//! socket2 (backlog, reuse flags, non-blocking) on the main thread at startup, then
//! handed to the reactor threads as mio listeners.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ListenError {
    #[error("cannot resolve listen address {address:?}: {source}")]
    Resolve { address: String, source: io::Error },
    #[error("listen address {0:?} resolves to nothing")]
    NoAddress(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// Resolves `address:port` (an IP literal or a host name) to one socket address.
pub fn resolve(address: &str, port: u16) -> Result<SocketAddr, ListenError> {
    let mut addrs = (address, port)
        .to_socket_addrs()
        .map_err(|source| ListenError::Resolve {
            address: address.to_owned(),
            source,
        })?;
    addrs
        .next()
        .ok_or_else(|| ListenError::NoAddress(address.to_owned()))
}

/// A socket bound to `addr` with the reuse flags every pyrs listener shares.
fn bound_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // Let "::" accept IPv4 too, as most servers do.
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn bind_one(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let socket = bound_socket(addr)?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Binds `addr` without listening: holds the port (and picks one for port 0) for
/// worker processes, which join it with `SO_REUSEPORT`. A socket that does not
/// listen is never handed connections.
pub fn reserve(addr: SocketAddr) -> Result<(Socket, SocketAddr), ListenError> {
    let socket = bound_socket(addr).map_err(|source| ListenError::Bind { addr, source })?;
    let bound = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| ListenError::Bind {
            addr,
            source: io::Error::other("bound socket has no address"),
        })?;
    Ok((socket, bound))
}

/// Binds `count` listeners to `addr`. With port 0 the first one picks a free port
/// and the others join it. Returns the listeners and the port actually bound.
pub fn bind_all(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
) -> Result<(Vec<mio::net::TcpListener>, SocketAddr), ListenError> {
    let mut listeners = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let l = bind_one(bound, backlog).map_err(|source| ListenError::Bind {
            addr: bound,
            source,
        })?;
        if bound.port() == 0 {
            bound = l.local_addr().map_err(|source| ListenError::Bind {
                addr: bound,
                source,
            })?;
        }
        listeners.push(mio::net::TcpListener::from_std(l));
    }
    Ok((listeners, bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_binds_every_listener_to_one_port() {
        let addr = resolve("127.0.0.1", 0).expect("resolve");
        let (ls, bound) = bind_all(addr, 3, 16).expect("bind");
        assert_eq!(ls.len(), 3);
        assert_ne!(bound.port(), 0);
        for l in &ls {
            assert_eq!(l.local_addr().expect("addr").port(), bound.port());
        }
    }

    #[test]
    fn reservation_keeps_the_port_for_listeners() {
        let addr = resolve("127.0.0.1", 0).expect("resolve");
        let (_held, bound) = reserve(addr).expect("reserve");
        assert_ne!(bound.port(), 0);
        let (ls, _) = bind_all(bound, 2, 16).expect("listeners join the port");
        assert_eq!(ls.len(), 2);
        // The port each listener is bound to, not the one `bind_all` was given.
        for l in &ls {
            assert_eq!(l.local_addr().expect("addr"), bound);
        }
    }

    #[test]
    fn resolves_localhost() {
        assert!(resolve("localhost", 80).is_ok());
    }
}
