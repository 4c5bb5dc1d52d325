//! Listening sockets and the connections they accept, TCP or Unix domain.
//!
//! TCP: one socket per reactor, all bound to the same address with
//! `SO_REUSEPORT`, so the kernel spreads new connections across reactors. Unix
//! (`unix:PATH`): one socket, shared by every reactor of every worker (each
//! polls it; whichever accepts first takes the connection).
//!
//! Who makes them: a single process makes its own, on the main thread at
//! startup. Under a supervisor, the supervisor makes them all before forking
//! (one [`ListenSet`] per worker slot) and keeps them open for its whole life:
//! a worker that is replaced (reload, recycling, crash) stops *accepting* and
//! its successor takes over the same sockets, so no connection waiting in an
//! accept queue is ever reset by a socket closing. Reactors get them as mio
//! listeners ([`Listener`]), and what they accept as a [`Stream`].

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mio::event::Source;
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use thiserror::Error;

/// Mode of a Unix socket file: owner and group may connect (put the proxy's
/// user in the server's group), others may not.
pub const UNIX_SOCKET_MODE: u32 = 0o660;

#[derive(Debug, Error)]
pub enum ListenError {
    #[error("cannot resolve listen address {address:?}: {source}")]
    Resolve { address: String, source: io::Error },
    #[error("listen address {0:?} resolves to nothing")]
    NoAddress(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: Address, source: io::Error },
    #[error("cannot listen on {0}: another server is listening there")]
    InUse(Address),
    #[error("cannot listen on {0}: the path exists and is not a socket")]
    NotASocket(Address),
}

/// Where to listen: a TCP address or a Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(addr) => write!(f, "{addr}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Address {
    /// The TCP port (0 for a Unix socket).
    pub fn port(&self) -> u16 {
        match self {
            Address::Tcp(addr) => addr.port(),
            Address::Unix(_) => 0,
        }
    }
}

/// Resolves `address:port` (an IP literal or a host name) to one socket address,
/// or `unix:PATH` to that path (`port` is then unused).
pub fn resolve(address: &str, port: u16) -> Result<Address, ListenError> {
    if let Some(path) = address.strip_prefix("unix:") {
        return Ok(Address::Unix(PathBuf::from(path)));
    }
    let mut addrs = (address, port)
        .to_socket_addrs()
        .map_err(|source| ListenError::Resolve {
            address: address.to_owned(),
            source,
        })?;
    addrs
        .next()
        .map(Address::Tcp)
        .ok_or_else(|| ListenError::NoAddress(address.to_owned()))
}

/// The listening sockets of one worker process: one per reactor.
#[derive(Debug, Default)]
pub struct ListenSet {
    sockets: Vec<Socket>,
}

impl ListenSet {
    /// The descriptors, for closing in processes that do not own this set.
    pub fn raw_fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.sockets.iter().map(AsRawFd::as_raw_fd)
    }

    /// Copies of the same sockets (`dup`), for a process that takes them over.
    pub fn try_clone(&self) -> io::Result<ListenSet> {
        let sockets = self
            .sockets
            .iter()
            .map(Socket::try_clone)
            .collect::<io::Result<_>>()?;
        Ok(ListenSet { sockets })
    }

    /// `count` copies (`dup`) of this set's first socket: the shape of a Unix
    /// socket's sets, which all hold the one socket.
    pub fn copies(&self, count: usize) -> io::Result<ListenSet> {
        let first = self
            .sockets
            .first()
            .ok_or_else(|| io::Error::other("no socket to copy"))?;
        let sockets = (0..count)
            .map(|_| first.try_clone())
            .collect::<io::Result<_>>()?;
        Ok(ListenSet { sockets })
    }

    /// One mio listener per reactor.
    pub fn into_listeners(self) -> Vec<Listener> {
        self.sockets
            .into_iter()
            .map(|socket| {
                if socket.domain().is_ok_and(|d| d == Domain::UNIX) {
                    Listener::Unix(mio::net::UnixListener::from_std(socket.into()))
                } else {
                    Listener::Tcp(mio::net::TcpListener::from_std(socket.into()))
                }
            })
            .collect()
    }
}

/// What [`open`] made.
#[derive(Debug)]
pub struct Opened {
    pub sets: Vec<ListenSet>,
    /// The address actually bound (the port the OS picked for port 0).
    pub bound: Address,
    /// For a Unix socket: removes its file when dropped.
    pub file: Option<SocketFile>,
}

/// Opens `sets` sets of `per_set` listening sockets on `addr`. TCP: every
/// socket is its own member of one `SO_REUSEPORT` group (with port 0, the first
/// picks the port and the others join it). Unix: one socket, every set holding
/// copies of it; a socket file left by a server that died is replaced, one a
/// live server listens on is not.
pub fn open(
    addr: &Address,
    sets: usize,
    per_set: usize,
    backlog: i32,
) -> Result<Opened, ListenError> {
    let count = sets * per_set;
    let bind_err = |addr: &Address| {
        let addr = addr.clone();
        move |source| ListenError::Bind { addr, source }
    };
    let mut sockets = Vec::with_capacity(count);
    let (bound, file) = match addr {
        Address::Tcp(first) => {
            let mut bound = *first;
            for _ in 0..count {
                let socket = tcp_socket(bound, backlog).map_err(bind_err(&Address::Tcp(bound)))?;
                if bound.port() == 0 {
                    bound = socket
                        .local_addr()
                        .ok()
                        .and_then(|a| a.as_socket())
                        .ok_or_else(|| ListenError::Bind {
                            addr: addr.clone(),
                            source: io::Error::other("bound socket has no address"),
                        })?;
                }
                sockets.push(socket);
            }
            (Address::Tcp(bound), None)
        }
        Address::Unix(path) => {
            let (socket, file) = unix_socket(addr, path, backlog)?;
            for _ in 1..count {
                sockets.push(socket.try_clone().map_err(bind_err(addr))?);
            }
            sockets.push(socket);
            (addr.clone(), Some(file))
        }
    };
    let mut sockets = sockets.into_iter();
    let sets = (0..sets)
        .map(|_| ListenSet {
            sockets: sockets.by_ref().take(per_set).collect(),
        })
        .collect();
    Ok(Opened { sets, bound, file })
}

/// A listening TCP socket with the reuse flags every pyrs listener shares.
fn tcp_socket(addr: SocketAddr, backlog: i32) -> io::Result<Socket> {
    let socket = bound_tcp(addr)?;
    socket.listen(backlog)?;
    Ok(socket)
}

/// A TCP socket bound to `addr` with the reuse flags, not listening.
fn bound_tcp(addr: SocketAddr) -> io::Result<Socket> {
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

/// Binds `addr` without listening: holds a port (and picks one for port 0) that
/// worker processes then listen on with `SO_REUSEPORT` (the metrics port). A
/// socket that does not listen is never handed connections.
pub fn reserve(addr: SocketAddr) -> Result<(Socket, SocketAddr), ListenError> {
    let err = |source| ListenError::Bind {
        addr: Address::Tcp(addr),
        source,
    };
    let socket = bound_tcp(addr).map_err(err)?;
    let bound = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| err(io::Error::other("bound socket has no address")))?;
    Ok((socket, bound))
}

/// One listening TCP socket on `addr` (with the reuse flags), as a mio listener.
pub fn tcp_listener(addr: SocketAddr, backlog: i32) -> io::Result<mio::net::TcpListener> {
    let socket = tcp_socket(addr, backlog)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// A listening Unix socket at `path`, mode [`UNIX_SOCKET_MODE`].
fn unix_socket(
    addr: &Address,
    path: &Path,
    backlog: i32,
) -> Result<(Socket, SocketFile), ListenError> {
    let bind_err = |source| ListenError::Bind {
        addr: addr.clone(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // A socket file: a live server answers a connect, a stale one
            // (left by a crash) refuses it.
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(ListenError::InUse(addr.clone())),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(bind_err)?;
                }
                Err(e) => return Err(bind_err(e)),
            }
        }
        Ok(_) => return Err(ListenError::NotASocket(addr.clone())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(bind_err)?;
    socket.set_nonblocking(true).map_err(bind_err)?;
    let sock_addr = SockAddr::unix(path).map_err(bind_err)?;
    socket.bind(&sock_addr).map_err(bind_err)?;
    let file = SocketFile(path.to_path_buf());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(UNIX_SOCKET_MODE))
        .map_err(bind_err)?;
    socket.listen(backlog).map_err(bind_err)?;
    Ok((socket, file))
}

/// A Unix socket's file, removed when this is dropped (at exit).
#[derive(Debug)]
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A reactor's listening socket.
#[derive(Debug)]
pub enum Listener {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

impl Listener {
    /// The next connection, with the client's address (none over a Unix socket).
    pub fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, peer)| (Stream::Tcp(s), Some(peer))),
            Listener::Unix(l) => l.accept().map(|(s, _)| (Stream::Unix(s), None)),
        }
    }
}

macro_rules! delegate_source {
    ($ty:ident) => {
        impl Source for $ty {
            fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
                match self {
                    $ty::Tcp(s) => s.register(r, t, i),
                    $ty::Unix(s) => s.register(r, t, i),
                }
            }
            fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
                match self {
                    $ty::Tcp(s) => s.reregister(r, t, i),
                    $ty::Unix(s) => s.reregister(r, t, i),
                }
            }
            fn deregister(&mut self, r: &Registry) -> io::Result<()> {
                match self {
                    $ty::Tcp(s) => s.deregister(r),
                    $ty::Unix(s) => s.deregister(r),
                }
            }
        }
    };
}
delegate_source!(Listener);
delegate_source!(Stream);

/// An accepted connection.
#[derive(Debug)]
pub enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Stream {
    /// Sets `TCP_NODELAY`; a Unix socket has no Nagle delay, so there it is a
    /// no-op.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nodelay(on),
            Stream::Unix(_) => Ok(()),
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match *self {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match *self {
            Stream::Tcp(s) => (&*s).write(buf),
            Stream::Unix(s) => (&*s).write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match *self {
            Stream::Tcp(s) => (&*s).write_vectored(bufs),
            Stream::Unix(s) => (&*s).write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(port: u16) -> Address {
        resolve("127.0.0.1", port).expect("resolve")
    }

    #[test]
    fn port_zero_binds_every_listener_to_one_port() {
        let opened = open(&local(0), 2, 3, 16).expect("bind");
        assert_eq!(opened.sets.len(), 2);
        assert_ne!(opened.bound.port(), 0);
        for set in opened.sets {
            let listeners = set.into_listeners();
            assert_eq!(listeners.len(), 3);
            for l in &listeners {
                let Listener::Tcp(l) = l else {
                    panic!("not TCP")
                };
                assert_eq!(l.local_addr().expect("addr").port(), opened.bound.port());
            }
        }
    }

    #[test]
    fn a_second_group_joins_the_port() {
        let first = open(&local(0), 1, 1, 16).expect("bind");
        let second = open(&first.bound, 1, 2, 16).expect("join");
        assert_eq!(second.bound, first.bound);
    }

    #[test]
    fn unix_socket_replaces_a_stale_file_but_not_a_live_one() {
        let dir = std::env::temp_dir().join(format!("pyrs-listener-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("s.sock");
        let addr = resolve(&format!("unix:{}", path.display()), 0).expect("resolve");
        // A stale socket: bound, then its listener gone.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale"));
        assert!(path.exists());
        let opened = open(&addr, 2, 2, 16).expect("replaces the stale file");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, UNIX_SOCKET_MODE);
        assert!(matches!(open(&addr, 1, 1, 16), Err(ListenError::InUse(_))));
        drop(opened);
        assert!(!path.exists(), "the file goes with the server");
        std::fs::write(&path, b"not a socket").expect("file");
        assert!(matches!(
            open(&addr, 1, 1, 16),
            Err(ListenError::NotASocket(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn resolves_localhost_and_unix_paths() {
        assert!(resolve("localhost", 80).is_ok());
        assert_eq!(
            resolve("unix:/run/x.sock", 80).expect("unix"),
            Address::Unix(PathBuf::from("/run/x.sock"))
        );
    }
}
