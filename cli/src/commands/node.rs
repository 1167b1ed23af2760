//! `calyx node status`: asks the local daemon's status endpoint; `calyx node checksystem`:
//! checks this host.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::args::NodeStatusArgs;
use calyx_node::status::{render, NodeStatus};

/// Prints the daemon's peers; a daemon that does not answer is one clear line and exit 1.
pub async fn status(args: NodeStatusArgs) -> Result<()> {
    let body = match fetch(&args.health_listen, "/status").await {
        Ok(body) => body,
        Err(e) => anyhow::bail!(
            "Calyx process is not running (no answer on {}: {e:#})",
            args.health_listen
        ),
    };
    if args.output == "json" {
        print!("{body}");
        return Ok(());
    }
    let status: NodeStatus =
        serde_json::from_str(&body).context("the daemon's status is not valid JSON")?;
    print!("{}", render(&status));
    Ok(())
}

/// Prints one line per check and a verdict; fails (exit 1) when a required check failed.
pub async fn checksystem() -> Result<()> {
    // The probes block (a thread in a namespace of its own, netlink, file reads).
    let checks = tokio::task::spawn_blocking(calyx_node::checksystem::run_checks)
        .await
        .context("the system checks did not finish")?;
    let (report, ok) = calyx_node::checksystem::render(&checks);
    print!("{report}");
    if !ok {
        anyhow::bail!("a required check failed");
    }
    Ok(())
}

/// `calyx node remove-rules`: deletes Calyx's nftables rules (uninstall).
pub async fn remove_rules() -> Result<()> {
    let removed = tokio::task::spawn_blocking(calyx_node::natrules::remove_rules)
        .await
        .context("removing the rules did not finish")?
        .context("cannot remove Calyx's nftables rules")?;
    if removed.is_empty() {
        println!("no Calyx nftables rules on this host");
    }
    for line in removed {
        println!("{line}");
    }
    Ok(())
}

/// A plain HTTP/1.0 GET on the local endpoint, bounded in time; an answer other than 200 is
/// an error with its status line and the first line of its body (the daemon's reason).
pub(crate) async fn fetch(addr: &str, path: &str) -> Result<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .context("timed out")??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        let status = head.lines().next().unwrap_or("bad answer");
        match body.lines().next().filter(|l| !l.trim().is_empty()) {
            Some(reason) => anyhow::bail!("{status}: {reason}"),
            None => anyhow::bail!("{status}"),
        }
    }
    Ok(body.to_string())
}
