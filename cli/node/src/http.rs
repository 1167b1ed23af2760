//! The health, metrics and status endpoint: `/liveness`, `/readiness`, `/metrics`, `/status`,
//! and the BGP looking glass `/bgp/routes`, `/bgp/peers` ([`crate::lookingglass`]).
//!
//! A minimal HTTP/1.x responder on tokio (GET only, one request per connection): probes and
//! Prometheus need nothing more, and it keeps a web framework out of the build.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::lookingglass::{self, SharedBgp};
use super::status::{metrics, NodeStatus};

/// The status the server answers from, updated by the daemon.
pub type SharedStatus = Arc<RwLock<NodeStatus>>;

/// What the endpoint answers from.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `/status`, `/metrics`, the probes.
    pub status: SharedStatus,
    /// `/bgp/...`.
    pub bgp: SharedBgp,
}

/// Reads a snapshot (a poisoned lock still holds a usable snapshot).
pub fn snapshot(status: &SharedStatus) -> NodeStatus {
    status
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// Binds the endpoint; errors here stop start-up.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `stop` is cancelled.
pub async fn serve(listener: TcpListener, endpoints: Endpoints, stop: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "health endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &endpoints).await {
                debug!(%peer, error = %e, "health endpoint: request failed");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, endpoints: &Endpoints) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    // Read the request head, bounded in size and time.
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while len < buf.len() {
            let n = stream.read(&mut buf[len..]).await?;
            if n == 0 {
                break;
            }
            len += n;
            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") || buf[..len].contains(&b'\n') {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let json_or_text = |(code, body): (u16, String)| {
        let kind = if code == 200 {
            "application/json"
        } else {
            "text/plain"
        };
        (code, kind, body)
    };
    let (code, content_type, body) = if method != "GET" && method != "HEAD" {
        (405, "text/plain", "method not allowed\n".to_string())
    } else if path == "/bgp/routes" {
        json_or_text(lookingglass::routes(&endpoints.bgp, query).await)
    } else if path == "/bgp/peers" {
        json_or_text(lookingglass::peers(&endpoints.bgp))
    } else {
        let snap = snapshot(&endpoints.status);
        match path {
            "/liveness" => (200, "text/plain", "ok\n".to_string()),
            "/readiness" if snap.ready => (200, "text/plain", "ready\n".to_string()),
            "/readiness" => (503, "text/plain", readiness_reason(&snap)),
            "/metrics" => (200, "text/plain; version=0.0.4", metrics(&snap)),
            "/status" => (
                200,
                "application/json",
                serde_json::to_string_pretty(&snap).unwrap_or_default() + "\n",
            ),
            _ => (404, "text/plain", "not found\n".to_string()),
        }
    };
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

fn readiness_reason(status: &NodeStatus) -> String {
    if !status.datastore_synced {
        return "not ready: datastore not synced\n".into();
    }
    let down: Vec<&str> = status
        .peers
        .iter()
        .filter(|p| p.info != "Established")
        .map(|p| p.address.as_str())
        .collect();
    format!("not ready: BGP not established with {}\n", down.join(", "))
}
