//! What `calyx bgp routes` and `calyx bgp peers` ask the daemon: the speaker's table and its
//! peers in detail, on the status endpoint (`/bgp/routes?prefix=|address=&peer=&limit=`,
//! `/bgp/peers`), as `birdc show route all` and `show protocols all` give a Calico user.
//!
//! The main loop publishes a [`BgpView`] (a lookup handle on the running speaker and a
//! snapshot of its peers) whenever the speaker's status changed; the endpoint answers from it
//! without touching the main loop (and formats the JSON only when asked). A route query goes to the speaker's RIB task, bounded in time.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use calyx_bgp::{PeerStatus, RouteLookup, RouteQuery};
use ipnet::IpNet;

/// The view the endpoint answers from; `None` fields until a speaker runs.
#[derive(Debug)]
pub struct BgpView {
    /// Asks the running speaker's RIB.
    pub lookup: Option<RouteLookup>,
    /// The speaker's peers at the last change.
    pub peers: Vec<PeerStatus>,
    /// When `peers` was taken: the uptimes shown are moved on by the time since.
    pub taken: Instant,
}

impl Default for BgpView {
    fn default() -> Self {
        BgpView {
            lookup: None,
            peers: Vec::new(),
            taken: Instant::now(),
        }
    }
}

/// Shared between the main loop (writer) and the endpoint (reader).
pub type SharedBgp = Arc<RwLock<BgpView>>;

/// The most destinations one query may ask for: it is answered inside the RIB task, which
/// handles no route meanwhile, so the endpoint bounds its work (about 10 ms per 10,000 here).
pub const MAX_LIMIT: usize = 100_000;

/// How long a route query may take before the endpoint gives up (a RIB busy with a route
/// storm answers between two messages, so this is generous).
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Decodes `%XX` escapes (a client may escape the `/` of a prefix or the `:` of an IPv6
/// address); anything malformed is kept as it is and fails to parse later.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the query string of `/bgp/routes`; the error names the parameter.
pub fn parse_route_query(query: &str) -> Result<RouteQuery, String> {
    let mut q = RouteQuery::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match key {
            "prefix" => {
                q.prefix = Some(
                    value
                        .parse::<IpNet>()
                        .map_err(|_| format!("prefix: {value:?} is not a CIDR"))?,
                )
            }
            "address" => {
                q.address = Some(
                    value
                        .parse::<IpAddr>()
                        .map_err(|_| format!("address: {value:?} is not an IP address"))?,
                )
            }
            "peer" => {
                q.peer = Some(
                    value
                        .parse::<IpAddr>()
                        .map_err(|_| format!("peer: {value:?} is not an IP address"))?,
                )
            }
            "limit" => {
                q.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n <= MAX_LIMIT)
                    .ok_or_else(|| {
                        format!("limit: {value:?} is not a number from 0 to {MAX_LIMIT}")
                    })?
            }
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    Ok(q)
}

/// The answer to `/bgp/routes?...`: (HTTP code, JSON or a one-line reason).
pub async fn routes(view: &SharedBgp, query: &str) -> (u16, String) {
    let q = match parse_route_query(query) {
        Ok(q) => q,
        Err(e) => return (400, format!("{e}\n")),
    };
    let lookup = view
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .lookup
        .clone();
    let Some(lookup) = lookup else {
        return (503, "BGP is not running on this node\n".into());
    };
    match tokio::time::timeout(QUERY_TIMEOUT, lookup.routes(q)).await {
        Ok(Ok(table)) => (
            200,
            serde_json::to_string_pretty(&table).unwrap_or_default() + "\n",
        ),
        Ok(Err(e)) => (503, format!("{e}\n")),
        Err(_) => (503, "the BGP speaker did not answer in time\n".into()),
    }
}

/// The answer to `/bgp/peers`.
pub fn peers(view: &SharedBgp) -> (u16, String) {
    let view = view.read().unwrap_or_else(|p| p.into_inner());
    if view.lookup.is_none() {
        return (503, "BGP is not running on this node\n".into());
    }
    // A snapshot is taken only when something changed; an Established peer's uptime has
    // grown by itself since.
    let since = view.taken.elapsed();
    let peers: Vec<PeerStatus> = view
        .peers
        .iter()
        .cloned()
        .map(|mut p| {
            p.uptime = p.uptime.map(|u| u + since);
            p
        })
        .collect();
    (
        200,
        serde_json::to_string_pretty(&peers).unwrap_or_default() + "\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_queries_parse_and_name_bad_parameters() {
        let q = parse_route_query("prefix=10.0.0.0%2F24&peer=10.0.0.1&limit=5").unwrap();
        assert_eq!(q.prefix, Some("10.0.0.0/24".parse().unwrap()));
        assert_eq!(q.peer, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(q.limit, 5);
        let q = parse_route_query("address=fd00%3A%3A1").unwrap();
        assert_eq!(q.address, Some("fd00::1".parse().unwrap()));
        assert_eq!(parse_route_query("").unwrap(), RouteQuery::default());
        assert!(parse_route_query("prefix=banana")
            .unwrap_err()
            .contains("prefix"));
        assert!(parse_route_query("peer=1.2.3")
            .unwrap_err()
            .contains("peer"));
        assert!(parse_route_query("limit=-1").unwrap_err().contains("limit"));
        assert!(parse_route_query("limit=100001")
            .unwrap_err()
            .contains("limit"));
        assert!(parse_route_query("limit=18446744073709551615").is_err());
        assert_eq!(parse_route_query("limit=100000").unwrap().limit, 100_000);
        assert!(parse_route_query("colour=red")
            .unwrap_err()
            .contains("colour"));
        // Broken escapes are not decoded (and then fail to parse), never a panic.
        assert!(parse_route_query("prefix=10.0.0.0%2").is_err());
        assert!(parse_route_query("prefix=%").is_err());
        assert!(parse_route_query("prefix=%zz").is_err());
        assert!(parse_route_query("prefix=%e2%82").is_err());
    }
}
