//! Reading the daemon's metrics exposition (`serve --metrics-address`) in a
//! test: one HTTP/1.0 GET over TCP or a unix socket, and one sample of it.

use std::io::{Read, Write};

pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// One HTTP/1.0 GET (the server closes the connection after it): status, body.
pub fn http_get(stream: &mut impl ReadWrite, host: &str, path: &str) -> (u16, String) {
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

/// The exposition served on a unix socket; panics unless the answer is 200.
pub fn scrape_unix(socket: &std::path::Path) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    let (status, body) = http_get(&mut s, "localhost", "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample whose line starts with `series` (name and labels as printed).
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
