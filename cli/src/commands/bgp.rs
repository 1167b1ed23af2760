//! `calyx bgp routes` and `calyx bgp peers`: the node's BGP table and peers, asked of the
//! local daemon's status endpoint (`/bgp/routes`, `/bgp/peers`), in the place of `birdc show
//! route all` and `show protocols all` on a calico-node.

use std::net::IpAddr;

use anyhow::{Context, Result};
use calyx_bgp::RouteTable;
use ipnet::IpNet;
use serde_json::Value;

use super::node::fetch;
use crate::args::{BgpPeersArgs, BgpRoutesArgs};
use crate::table::render_rows;

/// A daemon that does not answer is one line naming the endpoint.
async fn ask(addr: &str, path: &str) -> Result<String> {
    fetch(addr, path)
        .await
        .with_context(|| format!("no answer from the Calyx daemon on {addr}"))
}

/// `calyx bgp routes [PREFIX|ADDRESS] [--peer ADDR] [--limit N]`.
pub async fn routes(args: BgpRoutesArgs) -> Result<()> {
    // Checked here, so a typo is one line before anything is asked.
    let mut query = Vec::new();
    if let Some(target) = &args.target {
        if target.contains('/') {
            let net: IpNet = target
                .parse()
                .with_context(|| format!("{target:?} is neither a prefix nor an address"))?;
            query.push(format!("prefix={net}"));
        } else {
            let ip: IpAddr = target
                .parse()
                .with_context(|| format!("{target:?} is neither a prefix nor an address"))?;
            query.push(format!("address={ip}"));
        }
    }
    if let Some(peer) = &args.peer {
        let ip: IpAddr = peer
            .parse()
            .with_context(|| format!("--peer {peer:?} is not an IP address"))?;
        query.push(format!("peer={ip}"));
    }
    if args.limit > 0 {
        query.push(format!("limit={}", args.limit));
    }
    let body = ask(
        &args.health_listen,
        &format!("/bgp/routes?{}", query.join("&")),
    )
    .await?;
    if args.output == "json" {
        print!("{body}");
        return Ok(());
    }
    let table: RouteTable =
        serde_json::from_str(&body).context("the daemon's answer is not a route table")?;
    print!("{}", render_routes(&table));
    Ok(())
}

fn or_dash(v: Option<String>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into())
}

/// One row per path, the best of each destination marked `*>` (others `* `), as FRR and
/// most routers print it.
pub fn render_routes(table: &RouteTable) -> String {
    let mut rows = Vec::new();
    for r in &table.routes {
        for p in &r.paths {
            let mut communities = p.communities.clone();
            communities.extend(p.large_communities.iter().cloned());
            rows.push(vec![
                if p.best { "*>" } else { "* " }.to_string(),
                r.prefix.to_string(),
                if p.next_hop.is_unspecified() {
                    "self".to_string()
                } else {
                    p.next_hop.to_string()
                },
                match (p.from, p.peer_as) {
                    (Some(ip), Some(asn)) => format!("{ip} (AS{asn})"),
                    (Some(ip), None) => ip.to_string(),
                    (None, _) => "local".to_string(),
                },
                or_dash(Some(p.as_path.clone())),
                p.origin.clone(),
                or_dash(p.local_pref.map(|v| v.to_string())),
                or_dash(p.med.map(|v| v.to_string())),
                or_dash(Some(communities.join(" "))),
                if p.stale { "stale" } else { "" }.to_string(),
            ]);
        }
    }
    let mut out = render_rows(
        &[
            "",
            "PREFIX",
            "NEXT HOP",
            "FROM",
            "AS PATH",
            "ORIGIN",
            "LOCAL PREF",
            "MED",
            "COMMUNITIES",
            "FLAGS",
        ],
        rows,
    );
    if table.truncated {
        out.push_str(&format!(
            "(first {} destinations only; --limit N for more)\n",
            table.routes.len()
        ));
    }
    out
}

/// `calyx bgp peers`.
pub async fn peers(args: BgpPeersArgs) -> Result<()> {
    let body = ask(&args.health_listen, "/bgp/peers").await?;
    if args.output == "json" {
        print!("{body}");
        return Ok(());
    }
    let peers: Value = serde_json::from_str(&body).context("the daemon's answer is not JSON")?;
    print!(
        "{}",
        render_peers(peers.as_array().map_or(&[][..], Vec::as_slice))
    );
    Ok(())
}

fn field(v: &Value, name: &str) -> String {
    match v.get(name) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The peers' table, then per peer its negotiated capabilities and last error.
pub fn render_peers(peers: &[Value]) -> String {
    let rows = peers
        .iter()
        .map(|p| {
            vec![
                field(p, "address"),
                field(p, "remoteAs"),
                field(p, "label"),
                field(p, "state"),
                p.pointer("/uptime/secs")
                    .and_then(Value::as_u64)
                    .map_or("-".into(), |s| format!("{s}s")),
                field(p, "peerRouterId"),
                field(p, "holdTime"),
                field(p, "prefixesReceived"),
                field(p, "prefixesAccepted"),
                field(p, "prefixesAdvertised"),
                field(p, "establishedCount"),
                p.pointer("/bfd/snapshot/state")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
                    .to_string(),
            ]
        })
        .collect();
    let mut out = render_rows(
        &[
            "PEER",
            "AS",
            "TYPE",
            "STATE",
            "UPTIME",
            "ROUTER ID",
            "HOLD",
            "RECEIVED",
            "ACCEPTED",
            "ADVERTISED",
            "ESTABLISHED",
            "BFD",
        ],
        rows,
    );
    for p in peers {
        let caps: Vec<String> = p
            .get("capabilities")
            .and_then(Value::as_array)
            .map(|c| {
                c.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "{}: capabilities: {}\n",
            field(p, "address"),
            or_dash(Some(caps.join(", ")))
        ));
        if let Some(b) = p.get("bfd").filter(|b| !b.is_null()) {
            let us = |name: &str| {
                b.pointer(&format!("/snapshot/{name}"))
                    .and_then(Value::as_u64)
                    .map_or("-".into(), |v| format!("{} ms", v / 1000))
            };
            out.push_str(&format!(
                "{}: BFD {} (remote {}, diagnostic {}), transmit {}, detection {}, up {} times, failures {}\n",
                field(p, "address"),
                b.pointer("/snapshot/state").and_then(Value::as_str).unwrap_or("-"),
                b.pointer("/snapshot/remoteState").and_then(Value::as_str).unwrap_or("-"),
                b.pointer("/snapshot/diag").and_then(Value::as_str).unwrap_or("-"),
                us("txIntervalUs"),
                us("detectTimeUs"),
                field(b, "ups"),
                field(b, "failures"),
            ));
        }
        if let Some(e) = p.get("lastError").and_then(Value::as_str) {
            out.push_str(&format!("{}: last error: {e}\n", field(p, "address")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_table_shows_the_bfd_session() {
        let peers: Value = serde_json::json!([{
            "address": "10.0.0.254", "remoteAs": 65001, "label": "global",
            "state": "Established", "capabilities": [],
            "bfd": {"peer": "10.0.0.254", "ups": 2, "failures": 1, "snapshot": {
                "state": "Up", "remoteState": "Up", "diag": "None",
                "txIntervalUs": 300000, "detectTimeUs": 900000}}
        }, {
            "address": "10.0.0.2", "remoteAs": 64512, "label": "mesh",
            "state": "Established", "capabilities": [], "bfd": null
        }]);
        let out = render_peers(peers.as_array().map_or(&[][..], Vec::as_slice));
        assert!(
            out.lines().next().unwrap_or_default().ends_with("BFD"),
            "{out}"
        );
        assert!(
            out.contains("10.0.0.254: BFD Up (remote Up, diagnostic None), transmit 300 ms, detection 900 ms, up 2 times, failures 1"),
            "{out}"
        );
        assert!(!out.contains("10.0.0.2: BFD"), "{out}");
    }
}
