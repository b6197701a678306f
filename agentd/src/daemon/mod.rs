//! The daemon: one privileged process per host that owns the eBPF
//! programs and the audit collector, and starts, lists and kills sessions
//! for callers it authorizes by their socket credentials.
mod admission;
pub mod auth;
pub mod client;
pub mod config;
pub mod metrics;
pub mod proto;
pub mod server;
pub mod supervise;

/// Tells systemd the daemon is ready (`Type=notify`), when started by it.
pub fn notify_ready(status: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message = format!("READY=1\nSTATUS={status}\nMAINPID={}", std::process::id());
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = target.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt as _;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(message.as_bytes(), &addr))
    } else {
        sock.send_to(message.as_bytes(), std::path::Path::new(&target))
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}
