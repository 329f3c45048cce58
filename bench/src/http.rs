//! A tiny HTTP/1.0 GET for loopback endpoints (`/metrics`, `/health`): enough for scraping our own
//! programs without pulling an HTTP client into the benchmark.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A failed GET.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address does not resolve.
    #[error("{0} is not a host:port address")]
    BadAddress(String),
    /// Connecting, writing or reading failed.
    #[error("GET http://{addr}{path}: {source}")]
    Io {
        /// The server.
        addr: String,
        /// The path.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The answer is not HTTP.
    #[error("GET http://{addr}{path}: not an HTTP response")]
    NotHttp {
        /// The server.
        addr: String,
        /// The path.
        path: String,
    },
}

/// `GET http://{addr}{path}`: the status code and the body.
pub fn get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String), HttpError> {
    let sock: SocketAddr = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| HttpError::BadAddress(addr.to_string()))?;
    let io = |source| HttpError::Io {
        addr: addr.to_string(),
        path: path.to_string(),
        source,
    };
    let mut stream = TcpStream::connect_timeout(&sock, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(io)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(io)?;
    let text = String::from_utf8_lossy(&response);
    let not_http = || HttpError::NotHttp {
        addr: addr.to_string(),
        path: path.to_string(),
    };
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(not_http)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(not_http)?;
    Ok((status, body.to_string()))
}
