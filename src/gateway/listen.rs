//! Binding the sockets a configuration names, each as a [`Listener`] with its transport and
//! role, before any is served.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use super::StartError;
use super::server::{self, Listener, Role, Transport};

/// A plain-HTTP listener answering as `role`.
pub(super) fn listener(socket: TcpListener, role: Role) -> Listener {
    Listener {
        socket,
        transport: Transport::Plain,
        role,
    }
}

/// Binds every address in `addrs` as a listener of this kind, and returns the addresses bound
/// (port 0 resolved).
pub(super) fn bind_all(
    addrs: &[SocketAddr],
    reuse_port: bool,
    transport: &Transport,
    role: &Role,
    listeners: &mut Vec<Listener>,
) -> Result<Vec<SocketAddr>, StartError> {
    let mut bound = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let socket = bind(addr, reuse_port)?;
        bound.push(local_addr(&socket, addr)?);
        listeners.push(Listener {
            socket,
            transport: transport.clone(),
            role: role.clone(),
        });
    }
    Ok(bound)
}

pub(super) fn bind(addr: SocketAddr, reuse_port: bool) -> Result<TcpListener, StartError> {
    server::bind(addr, reuse_port).map_err(|source| StartError::Bind { addr, source })
}

pub(super) fn local_addr(
    listener: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}
