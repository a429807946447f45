//! `infergate probe`: the container image's health check. The image holds
//! the binary and what it links, nothing else (no shell, no curl), so the
//! binary checks itself: one plain HTTP/1.0 GET of `/v2/health/ready` on
//! the HTTP port the server was given (the same flags and environment),
//! exit status 0 when it answers 200. A blocking socket and one status
//! line: hyper's client would bring a runtime and its connection pool for
//! one request. With TLS on the HTTP port, probe another way (the
//! orchestrator's own HTTPS check).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Asks `path` of the server at `host:port`; `Err` says why it is not ready.
pub fn probe(host: IpAddr, port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    // A server listening on every address answers on loopback.
    let host = match host {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    let addr = SocketAddr::new(host, port);
    let fail = |e: std::io::Error| format!("{addr}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(fail)?;
    stream.set_read_timeout(Some(timeout)).map_err(fail)?;
    stream.set_write_timeout(Some(timeout)).map_err(fail)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(fail)?;
    // The status line is all that matters: "HTTP/1.1 200 OK".
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < head.len() {
        match stream.read(&mut head[got..]).map_err(fail)? {
            0 => break,
            n => got += n,
        }
        if head[..got].contains(&b'\n') {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head[..got]);
    let line = line.lines().next().unwrap_or_default();
    match line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        Some(_) => Err(format!("{addr}{path}: {line}")),
        None => Err(format!("{addr}{path}: no HTTP answer")),
    }
}
