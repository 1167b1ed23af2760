//! Looking inside the RIB: every path of the destinations a query names, best first, with
//! their attributes and the peer they came from; what `birdc show route [for ADDR] [protocol
//! P] all` shows a Calico user, served by `calyx bgp routes`.
//!
//! A query runs in the RIB task, between two messages, so it sees one consistent table. It
//! costs work for the destinations it returns, not for the table: a prefix or an address is
//! a hash lookup (one per prefix length for an address), and a whole-table listing stops at
//! the query's limit.

use std::net::IpAddr;

use calyx_proto::{AsSegmentType, Origin};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::table::{Dest, Key, Path, Table};
use super::{Rib, LOCAL};
use crate::attrs::Prefix;

/// The most destinations one answer holds unless the query asks for fewer.
pub const DEFAULT_LIMIT: usize = 10_000;

/// What to look up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteQuery {
    /// Only this destination (exact prefix).
    pub prefix: Option<IpNet>,
    /// Only the most specific destination holding this address (`show route for ADDR`).
    pub address: Option<IpAddr>,
    /// Only paths learned from this peer.
    pub peer: Option<IpAddr>,
    /// At most this many destinations (0: [`DEFAULT_LIMIT`]).
    pub limit: usize,
}

/// The answer to a [`RouteQuery`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteTable {
    /// The destinations found, IPv4 first, each with its paths best first.
    pub routes: Vec<RouteEntry>,
    /// More destinations matched than the limit allowed.
    pub truncated: bool,
}

/// One destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteEntry {
    /// The prefix.
    pub prefix: IpNet,
    /// Its paths, best first (only the named peer's with a peer filter).
    pub paths: Vec<PathEntry>,
}

/// One path of a destination, with its attributes as the RIB holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathEntry {
    /// The best path of its destination (the one used and advertised).
    pub best: bool,
    /// The peer it was learned from; `None` for a route this speaker originates.
    pub from: Option<IpAddr>,
    /// That peer's AS.
    pub peer_as: Option<u32>,
    /// The next hop (unspecified for an originated route: "self").
    pub next_hop: IpAddr,
    /// AS_PATH as BIRD prints it: `65001 65002 {65003 65004}`; empty inside the AS.
    pub as_path: String,
    /// ORIGIN: `IGP`, `EGP` or `Incomplete`.
    pub origin: String,
    /// LOCAL_PREF.
    pub local_pref: Option<u32>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// COMMUNITIES as `aa:nn`.
    pub communities: Vec<String>,
    /// LARGE_COMMUNITY as `aa:nn:mm`.
    pub large_communities: Vec<String>,
    /// ORIGINATOR_ID (route reflection).
    pub originator_id: Option<std::net::Ipv4Addr>,
    /// CLUSTER_LIST (route reflection).
    pub cluster_list: Vec<std::net::Ipv4Addr>,
    /// Kept from a restarting peer until it sends the route again (graceful restart).
    pub stale: bool,
}

/// BIRD's rendering of an AS_PATH: sequences as plain numbers, sets in braces, confederation
/// segments in parentheses.
fn render_as_path(path: Option<&calyx_proto::AsPath>) -> String {
    let Some(path) = path else {
        return String::new();
    };
    let mut parts = Vec::with_capacity(path.segments.len());
    for s in &path.segments {
        let asns = s
            .asns
            .iter()
            .map(|a| a.0.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        parts.push(match s.kind {
            AsSegmentType::Sequence => asns,
            AsSegmentType::Set => format!("{{{asns}}}"),
            AsSegmentType::ConfedSequence => format!("({asns})"),
            AsSegmentType::ConfedSet => format!("({{{asns}}})"),
        });
    }
    parts.join(" ")
}

impl Rib {
    fn path_entry(&self, p: &Path, best: bool) -> PathEntry {
        let a = &p.attrs.attrs;
        let peer = (p.peer != LOCAL).then(|| self.peers.get(&p.peer)).flatten();
        PathEntry {
            best,
            from: peer.map(|r| r.cfg.address),
            peer_as: peer.map(|r| r.cfg.remote_as),
            next_hop: p.attrs.next_hop,
            as_path: render_as_path(a.as_path.as_ref()),
            origin: match a.origin {
                Some(Origin::Igp) | None => "IGP",
                Some(Origin::Egp) => "EGP",
                Some(Origin::Incomplete) => "Incomplete",
            }
            .to_string(),
            local_pref: a.local_pref,
            med: a.med,
            communities: a.communities.iter().map(ToString::to_string).collect(),
            large_communities: a
                .large_communities
                .iter()
                .map(|c| format!("{}:{}:{}", c.global_admin, c.local_data1, c.local_data2))
                .collect(),
            originator_id: a.originator_id,
            cluster_list: a.cluster_list.clone(),
            stale: p.stale,
        }
    }

    /// The entry of one destination, with the query's peer filter; `None` when no path is
    /// left after it.
    fn entry<K: Key>(&self, d: &Dest<K>, peer: Option<IpAddr>) -> Option<RouteEntry> {
        let paths: Vec<PathEntry> = d
            .paths
            .as_slice()
            .iter()
            .enumerate()
            .map(|(i, p)| self.path_entry(p, i == 0))
            .filter(|e| peer.is_none() || e.from == peer)
            .collect();
        (!paths.is_empty()).then(|| RouteEntry {
            prefix: d.key.wrap().to_net(),
            paths,
        })
    }

    fn exact(&self, prefix: IpNet, peer: Option<IpAddr>) -> Option<RouteEntry> {
        match Prefix::from_net(prefix.trunc()) {
            Prefix::V4(k) => find(&self.tables.v4, &k).and_then(|d| self.entry(d, peer)),
            Prefix::V6(k) => find(&self.tables.v6, &k).and_then(|d| self.entry(d, peer)),
        }
    }

    /// Answers a query (see [`RouteQuery`]).
    pub fn lookup(&self, q: &RouteQuery) -> RouteTable {
        let limit = if q.limit == 0 { DEFAULT_LIMIT } else { q.limit };
        if let Some(prefix) = q.prefix {
            return RouteTable {
                routes: self.exact(prefix, q.peer).into_iter().collect(),
                truncated: false,
            };
        }
        if let Some(addr) = q.address {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            // Longest match: the first prefix length from the longest down that has a
            // destination with a path (after the peer filter).
            let found = (0..=max).rev().find_map(|len| {
                IpNet::new(addr, len)
                    .ok()
                    .and_then(|net| self.exact(net, q.peer))
            });
            return RouteTable {
                routes: found.into_iter().collect(),
                truncated: false,
            };
        }
        let mut answer = RouteTable::default();
        let v4 = self
            .tables
            .v4
            .iter()
            .filter_map(|(_, d)| self.entry(d, q.peer));
        let v6 = self
            .tables
            .v6
            .iter()
            .filter_map(|(_, d)| self.entry(d, q.peer));
        for e in v4.chain(v6) {
            if answer.routes.len() == limit {
                answer.truncated = true;
                break;
            }
            answer.routes.push(e);
        }
        // Slab order is arrival order; users read tables sorted. A truncated answer is the
        // first `limit` destinations in arrival order, sorted: not the lowest prefixes (which
        // would cost a sort of the whole table inside the RIB task).
        answer.routes.sort_by(|a, b| {
            (a.prefix.addr().is_ipv6(), a.prefix).cmp(&(b.prefix.addr().is_ipv6(), b.prefix))
        });
        answer
    }
}

fn find<'a, K: Key>(table: &'a Table<K>, k: &K) -> Option<&'a Dest<K>> {
    table.find(k).and_then(|pos| table.get(pos))
}

#[cfg(test)]
mod tests {
    use calyx_proto::{AsPath, AsSegment, Asn};

    use super::*;

    #[test]
    fn as_paths_render_as_bird_prints_them() {
        let path = AsPath {
            segments: vec![
                AsSegment {
                    kind: AsSegmentType::Sequence,
                    asns: vec![Asn(65001), Asn(65002)],
                },
                AsSegment {
                    kind: AsSegmentType::Set,
                    asns: vec![Asn(65003), Asn(65004)],
                },
            ],
        };
        assert_eq!(render_as_path(Some(&path)), "65001 65002 {65003 65004}");
        assert_eq!(render_as_path(None), "");
        assert_eq!(render_as_path(Some(&AsPath::default())), "");
    }
}
