//! A plain HTTP/1.1 client for tests of sluice's own HTTP endpoints (the web UI,
//! `/metrics`): one request per connection, the answer parsed as for moto.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::moto::{parse_response, HttpResponse};

/// Sends `METHOD path` to `addr` (`host:port`) with `Connection: close` and an empty
/// body, and reads the answer. Panics (the test fails) on a connection error or an
/// answer that is not HTTP.
pub fn request(method: &str, addr: &str, path: &str) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap_or_else(|e| panic!("send to {addr}: {e}"));
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read from {addr}: {e}"));
    parse_response(&raw).unwrap_or_else(|e| panic!("{method} {path} from {addr}: {e}"))
}

/// `GET path` from `addr`.
pub fn get(addr: &str, path: &str) -> HttpResponse {
    request("GET", addr, path)
}
