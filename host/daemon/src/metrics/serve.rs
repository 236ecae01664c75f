//! The `/metrics` endpoint: HTTP/1.1 on a loopback TCP address or a unix
//! socket. Loopback only: the series name snapshotters and policies, and a
//! node's Prometheus (or a proxy beside it) reaches loopback anyway.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, bail};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Metrics;

/// Where `/metrics` is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsAddress {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for MetricsAddress {
    type Err = anyhow::Error;

    /// `127.0.0.1:9311`, `[::1]:9311`, or an absolute socket path.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        if s.starts_with('/') {
            return Ok(MetricsAddress::Unix(s.into()));
        }
        let addr: SocketAddr = s.parse().with_context(|| {
            format!("metrics address {s:?}: neither an IP address with a port (127.0.0.1:9311) nor an absolute unix socket path")
        })?;
        if !addr.ip().is_loopback() {
            bail!(
                "metrics address {s:?} is not a loopback address: serve on 127.0.0.1 or [::1] (or a unix socket) and let the node's Prometheus or a proxy reach it"
            );
        }
        Ok(MetricsAddress::Tcp(addr))
    }
}

impl std::fmt::Display for MetricsAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsAddress::Tcp(a) => write!(f, "{a}"),
            MetricsAddress::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Bind `address` now (so a bad one fails the start) and serve scrapes
/// from a task until the process ends.
pub async fn serve(address: &MetricsAddress, metrics: &'static Metrics) -> anyhow::Result<()> {
    match address {
        MetricsAddress::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics: listen on {addr}"))?;
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => connection(stream, metrics),
                        Err(e) => accept_failed(e).await,
                    }
                }
            });
        }
        MetricsAddress::Unix(path) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("create {}", parent.display()))?;
            }
            // A socket left by an earlier run; one in use fails the bind below.
            if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
                std::fs::remove_file(path)
                    .with_context(|| format!("remove stale socket {}", path.display()))?;
            }
            let listener = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("metrics: listen on {}", path.display()))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => connection(stream, metrics),
                        Err(e) => accept_failed(e).await,
                    }
                }
            });
        }
    }
    Ok(())
}

/// Out of fds, say: wait a little instead of spinning.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!(error = %e, "metrics: accept failed");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    metrics: &'static Metrics,
) {
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |req| respond(req, metrics));
        let served = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
        if let Err(e) = served {
            tracing::debug!(error = %e, "metrics: connection ended");
        }
    });
}

async fn respond(
    req: Request<Incoming>,
    metrics: &'static Metrics,
) -> Result<Response<String>, Infallible> {
    let reply = |status, text: &str| {
        let mut r = Response::new(text.to_string());
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/metrics" {
        return Ok(reply(StatusCode::NOT_FOUND, "wasmsnap serves /metrics only\n"));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n"));
    }
    // Prometheus asks for OpenMetrics; curl and promtool get the older text format.
    let openmetrics = req
        .headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("application/openmetrics-text")));
    // Counting snapshots reads the metastores: off the reactor.
    let body = match tokio::task::spawn_blocking(|| metrics.encode()).await {
        Ok(body) if openmetrics => body,
        Ok(body) => prometheus_text(&body),
        Err(e) => return Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n"))),
    };
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    Ok(response)
}

/// The Prometheus text format (0.0.4) of an OpenMetrics exposition from
/// prometheus-client: the two differ, for what we emit, only in that
/// OpenMetrics names a counter family without its `_total` suffix (which
/// its samples carry) and ends with `# EOF`. The older parser (promtool's,
/// Grafana's help lookup) reads a family `x` with no samples and samples
/// `x_total` with no help. Sample lines are left exactly as encoded.
fn prometheus_text(openmetrics: &str) -> String {
    let lines: Vec<&str> = openmetrics.lines().collect();
    let mut out = String::with_capacity(openmetrics.len() + 256);
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let counter = line.strip_prefix("# HELP ").and_then(|rest| {
            let name = rest.split(' ').next()?;
            let next = lines.get(i + 1)?;
            (*next == format!("# TYPE {name} counter")).then_some(name)
        });
        if let Some(name) = counter {
            out.push_str(&format!("# HELP {name}_total{}\n", &line[7 + name.len()..]));
            out.push_str(&format!("# TYPE {name}_total counter\n"));
            i += 2;
            continue;
        }
        if line != "# EOF" {
            out.push_str(line);
            out.push('\n');
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            "127.0.0.1:9311".parse::<MetricsAddress>().unwrap(),
            MetricsAddress::Tcp("127.0.0.1:9311".parse().unwrap())
        );
        assert!(matches!("[::1]:9311".parse::<MetricsAddress>().unwrap(), MetricsAddress::Tcp(_)));
        assert_eq!(
            "/run/wasmsnap/metrics.sock".parse::<MetricsAddress>().unwrap(),
            MetricsAddress::Unix("/run/wasmsnap/metrics.sock".into())
        );
        let e = "0.0.0.0:9311".parse::<MetricsAddress>().unwrap_err().to_string();
        assert!(e.contains("not a loopback"), "{e}");
        assert!("metrics.sock".parse::<MetricsAddress>().is_err());
        assert!("localhost:9311".parse::<MetricsAddress>().is_err());
    }

    #[test]
    fn counters_get_their_total_name_in_the_prometheus_text_format() {
        let om = "# HELP a_seconds Help.\n# TYPE a_seconds histogram\na_seconds_count 1\n# HELP b Things done.\n# TYPE b counter\nb_total{x=\"y\"} 3\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP a_seconds Help.\n# TYPE a_seconds histogram\na_seconds_count 1\n# HELP b_total Things done.\n# TYPE b_total counter\nb_total{x=\"y\"} 3\n"
        );
    }
}
