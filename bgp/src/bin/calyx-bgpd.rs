//! A standalone Calyx BGP speaker for tests and benchmarks: `calyx-bgpd CONFIG.json`.
//!
//! The config is `{"global": GlobalConfig, "peers": [PeerConfig], "originate": ["10.0.0.0/26"],
//! "status": "/path/status.json", "routes": "/path/routes.txt"}` (camelCase fields). While it
//! runs, it rewrites the status file (JSON list of peers) and the routes file (one best route
//! per line: `prefix nexthop[,nexthop]`) every 200 ms. Commands on stdin, one per line:
//! `originate PREFIX`, `withdraw PREFIX`, `peers JSON-LIST`, `stop` (hard: Cease with a
//! shutdown communication) and `restart` (graceful: close without NOTIFICATION). SIGTERM is a
//! graceful stop.

use std::collections::BTreeMap;
use std::time::Duration;

use calyx_bgp::{CancellationToken, GlobalConfig, PeerConfig, Speaker};
use ipnet::IpNet;
use serde::Deserialize;
use tokio::io::AsyncBufReadExt;

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Config {
    global: GlobalConfig,
    peers: Vec<PeerConfig>,
    originate: Vec<IpNet>,
    status: Option<String>,
    routes: Option<String>,
    /// Print the number of best routes when it reaches this (benchmarks).
    expect: Option<usize>,
}

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: calyx-bgpd CONFIG.json");
        std::process::exit(2);
    };
    let cfg: Config = match std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("calyx-bgpd: {path}: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("calyx-bgpd: runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cfg)) {
        eprintln!("calyx-bgpd: {e}");
        std::process::exit(1);
    }
}

async fn run(cfg: Config) -> Result<(), calyx_bgp::Error> {
    let token = CancellationToken::new();
    let speaker = Speaker::start(cfg.global.clone(), token.clone()).await?;
    speaker.set_peers(cfg.peers.clone()).await?;
    for p in &cfg.originate {
        speaker.originate(*p, None).await?;
    }
    let want_routes = cfg.routes.is_some();
    let mut feed = if want_routes {
        Some(speaker.subscribe(65536).await?)
    } else {
        None
    };
    let mut table: BTreeMap<IpNet, Vec<std::net::IpAddr>> = BTreeMap::new();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut graceful = true;
    loop {
        tokio::select! {
            c = async { match feed.as_mut() { Some(f) => f.recv().await, None => std::future::pending().await } } => {
                match c {
                    Some(c) => {
                        if c.withdrawn { table.remove(&c.prefix); } else { table.insert(c.prefix, c.next_hops); }
                    }
                    None => feed = None,
                }
            }
            line = stdin.next_line(), if stdin_open => {
                match line {
                    Ok(Some(l)) => {
                        let mut it = l.splitn(2, ' ');
                        let cmd = it.next().unwrap_or("");
                        let arg = it.next().unwrap_or("").trim();
                        match cmd {
                            "originate" => if let Ok(p) = arg.parse() { speaker.originate(p, None).await?; },
                            "withdraw" => if let Ok(p) = arg.parse() { speaker.withdraw(p).await?; },
                            "peers" => match serde_json::from_str::<Vec<PeerConfig>>(arg) {
                                Ok(p) => speaker.set_peers(p).await?,
                                Err(e) => eprintln!("calyx-bgpd: peers: {e}"),
                            },
                            "stop" => { graceful = false; break; }
                            "restart" => { graceful = true; break; }
                            _ => eprintln!("calyx-bgpd: unknown command {l:?}"),
                        }
                    }
                    _ => stdin_open = false,
                }
            }
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => break,
            _ = tick.tick() => {
                if let Some(p) = &cfg.status {
                    let st = speaker.status();
                    if let Ok(s) = serde_json::to_string_pretty(&st) {
                        let tmp = format!("{p}.tmp");
                        if std::fs::write(&tmp, s).is_ok() { let _ = std::fs::rename(&tmp, p); }
                    }
                }
                if let Some(p) = &cfg.routes {
                    let mut s = String::new();
                    for (k, v) in &table {
                        let nh: Vec<String> = v.iter().map(|a| a.to_string()).collect();
                        s.push_str(&format!("{k} {}\n", nh.join(",")));
                    }
                    let tmp = format!("{p}.tmp");
                    if std::fs::write(&tmp, s).is_ok() { let _ = std::fs::rename(&tmp, p); }
                }
            }
        }
    }
    speaker.shutdown(graceful).await;
    Ok(())
}
