//! The `get-1g` scenarios' peer that does nothing but move bytes: a TCP relay that accepts a
//! connection, connects to the origin, and copies both directions. No HTTP is parsed and nothing
//! is decorated, so its throughput is what the kernel lets a user-space proxy reach on this
//! machine: the figure corsgate's and nginx's 1 GiB GETs are read against.
//!
//! Two modes:
//! - `copy`: nonblocking sockets, `poll(2)`, `read`/`write` through one user-space buffer per
//!   direction (`--buffer`, by default what corsgate's origin client reads at most at once);
//! - `splice`: `splice(2)` from one socket into a pipe and from the pipe into the other socket,
//!   the pipe enlarged to `--buffer` with `F_SETPIPE_SZ`: no byte is copied in user space.
//!
//! It serves one connection at a time, in a loop, and ends a connection as soon as either side
//! has closed and what it sent has been passed on: a measuring stick, not a proxy. Linux only.
//!
//! ```text
//! cargo build --release --manifest-path benches/Cargo.toml --target-dir target --bin relay
//! target/release/relay --listen 127.0.0.1:8091 --origin 127.0.0.1:8090 --mode copy
//! ```

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(about = "A TCP relay that only moves bytes, for the load benchmark (loopback only)")]
struct Args {
    /// Where clients connect.
    #[arg(long)]
    listen: SocketAddr,
    /// Where every accepted connection is relayed to.
    #[arg(long)]
    origin: SocketAddr,
    #[arg(long, value_enum)]
    mode: Mode,
    /// Bytes held per direction at most: the buffer (copy) or the pipe's size (splice; the kernel
    /// rounds it up to a power of two pages).
    #[arg(long, default_value_t = 408 * 1024, value_parser = clap::value_parser!(u32).range(4096..))]
    buffer: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// read/write through a user-space buffer.
    Copy,
    /// splice through a pipe, no user-space copy.
    Splice,
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("cannot connect to the origin {addr}: {source} (is it running?)")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("cannot set up a socket: {0}")]
    Socket(io::Error),
    #[error("cannot create a pipe: {0}")]
    Pipe(io::Error),
    #[error(
        "cannot size a pipe to {bytes} bytes: {source} (pass a smaller --buffer, or raise \
         /proc/sys/fs/pipe-max-size)"
    )]
    PipeSize { bytes: usize, source: io::Error },
    #[error("poll: {0}")]
    Poll(io::Error),
    #[error("{op} the {peer}: {source}")]
    Transfer {
        op: &'static str,
        peer: &'static str,
        source: io::Error,
    },
}

/// What one direction holds between its source and its destination.
enum Held {
    /// `buf[start..end]` is read and not yet written.
    Bytes {
        buf: Box<[u8]>,
        start: usize,
        end: usize,
    },
    /// `bytes` are in the pipe, spliced in and not yet spliced out.
    Pipe {
        read: OwnedFd,
        write: OwnedFd,
        size: usize,
        bytes: usize,
    },
}

/// One direction of a relayed connection: what is read from `from` is written to `to`.
struct Direction<'a> {
    /// Who is at `from` and who at `to`, for errors.
    names: (&'static str, &'static str),
    from: &'a TcpStream,
    to: &'a TcpStream,
    held: Held,
    eof: bool,
}

/// Splice flags for both halves. SPLICE_F_NONBLOCK keeps a full pipe from blocking the one
/// thread that serves both directions; SPLICE_F_MOVE is only a hint. SPLICE_F_MORE is left out:
/// on the outgoing splice it made the transfer slower (see the README's relay section).
const SPLICE_FLAGS: libc::c_uint = libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE;

impl<'a> Direction<'a> {
    fn new(
        names: (&'static str, &'static str),
        from: &'a TcpStream,
        to: &'a TcpStream,
        mode: Mode,
        buffer: usize,
    ) -> Result<Self, RelayError> {
        let held = match mode {
            Mode::Copy => Held::Bytes {
                buf: vec![0; buffer].into_boxed_slice(),
                start: 0,
                end: 0,
            },
            Mode::Splice => {
                let (read, write) = pipe()?;
                // SAFETY: F_SETPIPE_SZ takes an int argument and touches no memory of ours;
                // the descriptor is open, owned by `write`.
                let size = unsafe {
                    libc::fcntl(
                        write.as_raw_fd(),
                        libc::F_SETPIPE_SZ,
                        libc::c_int::try_from(buffer).unwrap_or(libc::c_int::MAX),
                    )
                };
                let size = usize::try_from(size).map_err(|_| RelayError::PipeSize {
                    bytes: buffer,
                    source: io::Error::last_os_error(),
                })?;
                Held::Pipe {
                    read,
                    write,
                    size,
                    bytes: 0,
                }
            }
        };
        Ok(Direction {
            names,
            from,
            to,
            held,
            eof: false,
        })
    }

    fn pending(&self) -> usize {
        match &self.held {
            Held::Bytes { start, end, .. } => end - start,
            Held::Pipe { bytes, .. } => *bytes,
        }
    }

    /// Reads only once everything held has been written: a splice into a pipe that still holds
    /// data can fail with EAGAIN because the pipe is full (it counts slots, a page of a socket
    /// buffer each at most, not bytes) while the socket is readable, and polling the socket for
    /// input would then spin.
    fn wants_read(&self) -> bool {
        !self.eof && self.pending() == 0
    }

    fn wants_write(&self) -> bool {
        self.pending() > 0
    }

    fn finished(&self) -> bool {
        self.eof && self.pending() == 0
    }

    /// Moves what it can without blocking: reads if `readable` and nothing is held, then writes
    /// what is held if `writable` or if it has just been read (the destination usually has room,
    /// and poll would only say so one system call later).
    fn step(&mut self, readable: bool, writable: bool) -> Result<(), RelayError> {
        let mut just_read = false;
        if readable && self.wants_read() {
            let read = match &mut self.held {
                Held::Bytes { buf, start, end } => {
                    let result = (&mut &*self.from).read(buf);
                    if let Ok(n) = result {
                        (*start, *end) = (0, n);
                    }
                    result
                }
                Held::Pipe {
                    write, size, bytes, ..
                } => {
                    let result = splice(self.from.as_raw_fd(), write.as_raw_fd(), *size);
                    if let Ok(n) = result {
                        *bytes = n;
                    }
                    result
                }
            };
            match settled(read, "read from", self.names.0)? {
                Some(0) => self.eof = true,
                Some(_) => just_read = true,
                None => {}
            }
        }
        if (writable || just_read) && self.wants_write() {
            let written = match &mut self.held {
                Held::Bytes { buf, start, end } => {
                    let result = (&mut &*self.to).write(&buf[*start..*end]);
                    if let Ok(n) = result {
                        *start += n;
                    }
                    result
                }
                Held::Pipe { read, bytes, .. } => {
                    let result = splice(read.as_raw_fd(), self.to.as_raw_fd(), *bytes);
                    if let Ok(n) = result {
                        *bytes -= n;
                    }
                    result
                }
            };
            // Nothing written of a nonempty buffer without an error: polling again would spin.
            let written = written.and_then(|n| match n {
                0 => Err(io::ErrorKind::WriteZero.into()),
                n => Ok(n),
            });
            settled(written, "write to", self.names.1)?;
        }
        Ok(())
    }
}

/// How a read or write of `op` the `peer` ended: the bytes it moved, `None` if it is to be
/// tried again once poll says so, or the error that ends the relay.
fn settled(
    result: io::Result<usize>,
    op: &'static str,
    peer: &'static str,
) -> Result<Option<usize>, RelayError> {
    match result {
        Ok(n) => Ok(Some(n)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(RelayError::Transfer { op, peer, source }),
    }
}

/// A nonblocking pipe: its read end, its write end.
fn pipe() -> Result<(OwnedFd, OwnedFd), RelayError> {
    let mut fds: [RawFd; 2] = [-1; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given, which outlives the call.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(RelayError::Pipe(io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Up to `len` bytes from `from` to `to`, one of which is a pipe.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: null offsets are what splice expects for pipes and sockets, and no other memory is
    // passed; both descriptors are borrowed from owners that outlive the call.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            SPLICE_FLAGS,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Relays one accepted connection until either side is done or fails.
fn relay(
    client: TcpStream,
    origin: SocketAddr,
    mode: Mode,
    buffer: usize,
) -> Result<(), RelayError> {
    let upstream = TcpStream::connect(origin).map_err(|source| RelayError::Connect {
        addr: origin,
        source,
    })?;
    for stream in [&client, &upstream] {
        stream.set_nonblocking(true).map_err(RelayError::Socket)?;
        stream.set_nodelay(true).map_err(RelayError::Socket)?;
    }
    let mut up = Direction::new(("client", "origin"), &client, &upstream, mode, buffer)?;
    let mut down = Direction::new(("origin", "client"), &upstream, &client, mode, buffer)?;
    let (client_fd, upstream_fd) = (client.as_raw_fd(), upstream.as_raw_fd());
    loop {
        // Done as soon as one side has closed and what it sent is passed on: the benchmark's
        // clients close when their answer is complete, and a half-closed client must not hold
        // the one connection served.
        if up.finished() || down.finished() {
            return Ok(());
        }
        let interest = |reads: &Direction, writes: &Direction| {
            (if reads.wants_read() { libc::POLLIN } else { 0 })
                | (if writes.wants_write() {
                    libc::POLLOUT
                } else {
                    0
                })
        };
        let watch = |fd: RawFd, events: libc::c_short| libc::pollfd {
            // A descriptor with nothing wanted of it is left out (a negative fd is ignored), so
            // that a hang-up on it cannot wake poll again and again.
            fd: if events == 0 { -1 } else { fd },
            events,
            revents: 0,
        };
        let mut fds = [
            watch(client_fd, interest(&up, &down)),
            watch(upstream_fd, interest(&down, &up)),
        ];
        // SAFETY: `fds` is a live array of two pollfd, and its length is passed with it.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(RelayError::Poll(e));
        }
        // An error or a hang-up counts as ready: the next read or write reports it.
        let ready = |fd: &libc::pollfd, event: libc::c_short| {
            fd.revents & (event | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
        };
        up.step(ready(&fds[0], libc::POLLIN), ready(&fds[1], libc::POLLOUT))?;
        down.step(ready(&fds[1], libc::POLLIN), ready(&fds[0], libc::POLLOUT))?;
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let listener = match TcpListener::bind(args.listen) {
        Ok(listener) => listener,
        Err(source) => {
            eprintln!(
                "relay: {}",
                RelayError::Listen {
                    addr: args.listen,
                    source
                }
            );
            return ExitCode::FAILURE;
        }
    };
    let buffer = args.buffer as usize;
    eprintln!(
        "relay: {:?} mode, {} -> {}, {} bytes per direction",
        args.mode, args.listen, args.origin, buffer
    );
    loop {
        match listener.accept() {
            Ok((client, _)) => {
                if let Err(e) = relay(client, args.origin, args.mode, buffer) {
                    eprintln!("relay: connection ended: {e}");
                }
            }
            Err(e) => eprintln!("relay: accept: {e}"),
        }
    }
}
