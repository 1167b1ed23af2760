//! IP pools as IPAM sees them: which pools a node may take blocks from, and the blocks of a pool.

use std::collections::BTreeMap;
use std::net::IpAddr;

use calyx_datastore::resources::{AssignmentMode, IPPool, IPReservation, Kind, Node};
use calyx_datastore::selector::Selector;
use calyx_datastore::store::Store;
use ipnet::IpNet;

use crate::error::{IpamError, Result};
use crate::types::Family;

/// A pool reduced to what IPAM needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// The pool's name.
    pub name: String,
    /// The pool's network.
    pub cidr: IpNet,
    /// Block prefix length.
    pub block_size: u8,
    /// Disabled pools are never used for new allocations.
    pub disabled: bool,
    /// The `nodeSelector` text.
    pub node_selector: String,
    /// Whether workload (pod) addresses may come from the pool.
    pub allows_workloads: bool,
    /// Whether tunnel addresses may come from the pool.
    pub allows_tunnels: bool,
    /// `assignmentMode: Manual`: the pool serves only requests that name it, never automatic
    /// assignment (as Calico's IPAM, which leaves such pools out unless requested).
    pub manual: bool,
}

impl Pool {
    /// From the stored resource.
    pub fn from_resource(p: &IPPool) -> Pool {
        Pool {
            name: p.metadata.name.clone(),
            cidr: p.spec.cidr.trunc(),
            block_size: p.spec.block_size,
            disabled: p.spec.disabled,
            node_selector: p.spec.node_selector.clone(),
            allows_workloads: p.spec.allows_workloads(),
            allows_tunnels: p.spec.allows_tunnels(),
            manual: p.spec.assignment_mode == Some(AssignmentMode::Manual),
        }
    }

    /// The pool's family.
    pub fn family(&self) -> Family {
        Family::of_net(&self.cidr)
    }

    /// Whether the node with `labels` may take blocks from this pool. A selector that does not
    /// parse is an error that names the pool.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> Result<bool> {
        let sel = Selector::parse(&self.node_selector).map_err(|e| IpamError::BadSelector {
            pool: self.name.clone(),
            selector: self.node_selector.clone(),
            reason: e.detail(),
        })?;
        Ok(sel.matches(labels))
    }

    /// Number of blocks in the pool (saturating; pools with more than 2^32 blocks are cut).
    pub fn block_count(&self) -> u64 {
        let bits = u32::from(self.block_size.saturating_sub(self.cidr.prefix_len()));
        if bits >= 32 {
            1 << 32
        } else {
            1u64 << bits
        }
    }

    /// The `index`-th block of the pool.
    pub fn block(&self, index: u64) -> Option<IpNet> {
        if index >= self.block_count() {
            return None;
        }
        let host_bits = u32::from(self.cidr.max_prefix_len() - self.block_size);
        match self.cidr {
            IpNet::V4(n) => {
                let base = u32::from(n.network());
                let off = u32::try_from(index)
                    .ok()?
                    .checked_shl(host_bits)
                    .unwrap_or(0);
                let addr = std::net::Ipv4Addr::from(base.checked_add(off)?);
                ipnet::Ipv4Net::new(addr, self.block_size)
                    .ok()
                    .map(IpNet::V4)
            }
            IpNet::V6(n) => {
                let base = u128::from(n.network());
                let off = u128::from(index).checked_shl(host_bits).unwrap_or(0);
                let addr = std::net::Ipv6Addr::from(base.checked_add(off)?);
                ipnet::Ipv6Net::new(addr, self.block_size)
                    .ok()
                    .map(IpNet::V6)
            }
        }
    }

    /// The block of this pool that holds `ip`.
    pub fn block_of(&self, ip: IpAddr) -> Option<IpNet> {
        if !self.cidr.contains(&ip) {
            return None;
        }
        IpNet::new(ip, self.block_size).ok().map(|n| n.trunc())
    }

    /// Whether `wanted` (pool names or CIDRs) names this pool.
    pub fn is_named_by(&self, wanted: &[String]) -> bool {
        wanted.iter().any(|w| {
            let w = w.trim();
            w == self.name
                || w.parse::<IpNet>()
                    .map(|n| n.trunc() == self.cidr)
                    .unwrap_or(false)
        })
    }
}

/// Every pool in the store (undecodable ones are skipped with a warning).
pub async fn list_pools<S: Store>(store: &S) -> Result<Vec<Pool>> {
    let listing = store.list(Kind::IPPool.key_prefix()).await?;
    let mut pools = Vec::new();
    for kv in listing.kvs {
        match serde_json::from_slice::<IPPool>(&kv.value) {
            Ok(p) => pools.push(Pool::from_resource(&p)),
            Err(e) => tracing::warn!(key = %kv.key, error = %e, "skipping undecodable IP pool"),
        }
    }
    Ok(pools)
}

/// Every reserved network of every IPReservation (undecodable ones are skipped with a warning,
/// as are entries that are not CIDRs or addresses): automatic assignment never hands these out.
pub async fn list_reserved<S: Store>(store: &S) -> Result<Vec<IpNet>> {
    let listing = store.list(Kind::IPReservation.key_prefix()).await?;
    let mut out = Vec::new();
    for kv in listing.kvs {
        match serde_json::from_slice::<IPReservation>(&kv.value) {
            Ok(r) => out.extend(r.spec.nets()),
            Err(e) => {
                tracing::warn!(key = %kv.key, error = %e, "skipping undecodable IP reservation")
            }
        }
    }
    Ok(out)
}

/// A node's labels; `None` when the node does not exist.
pub async fn node_labels<S: Store>(
    store: &S,
    node: &str,
) -> Result<Option<BTreeMap<String, String>>> {
    let Some(kv) = store.get(&Kind::Node.key(node)).await? else {
        return Ok(None);
    };
    let n: Node = serde_json::from_slice(&kv.value).map_err(|e| IpamError::Decode {
        key: kv.key.clone(),
        reason: e.to_string(),
    })?;
    Ok(Some(n.metadata.labels))
}

/// Whether a node exists.
pub async fn node_exists<S: Store>(store: &S, node: &str) -> Result<bool> {
    Ok(store.get(&Kind::Node.key(node)).await?.is_some())
}

/// The pools `node` (with `labels`) may take new blocks of `family` from, for workloads or
/// tunnels, restricted to `wanted` when given. Disabled pools are never returned; `Manual` pools
/// only when `wanted` names them.
pub fn usable_pools<'a>(
    pools: &'a [Pool],
    family: Family,
    labels: &BTreeMap<String, String>,
    tunnel: bool,
    wanted: Option<&[String]>,
) -> Result<Vec<&'a Pool>> {
    let mut out = Vec::new();
    for p in pools {
        if p.disabled || p.family() != family {
            continue;
        }
        if tunnel && !p.allows_tunnels || !tunnel && !p.allows_workloads {
            continue;
        }
        if let Some(w) = wanted {
            if !p.is_named_by(w) {
                continue;
            }
        } else if p.manual || !p.selects(labels)? {
            continue;
        }
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn pool(cidr: &str, bs: u8, sel: &str) -> Pool {
        Pool {
            name: format!("p-{cidr}"),
            cidr: cidr.parse().unwrap(),
            block_size: bs,
            disabled: false,
            node_selector: sel.to_string(),
            allows_workloads: true,
            allows_tunnels: true,
            manual: false,
        }
    }

    #[test]
    fn blocks_of_a_pool() {
        let p = pool("10.0.0.0/24", 26, "all()");
        assert_eq!(p.block_count(), 4);
        assert_eq!(p.block(0), Some("10.0.0.0/26".parse().unwrap()));
        assert_eq!(p.block(3), Some("10.0.0.192/26".parse().unwrap()));
        assert_eq!(p.block(4), None);
        assert_eq!(
            p.block_of("10.0.0.77".parse().unwrap()),
            Some("10.0.0.64/26".parse().unwrap())
        );
        let p6 = pool("fd00::/120", 122, "all()");
        assert_eq!(p6.block(1), Some("fd00::40/122".parse().unwrap()));
    }

    #[test]
    fn selection() {
        let labels: BTreeMap<String, String> = [("rack".to_string(), "a".to_string())].into();
        let pools = vec![
            pool("10.0.0.0/24", 26, "rack == 'a'"),
            pool("10.1.0.0/24", 26, "rack == 'b'"),
            Pool {
                disabled: true,
                ..pool("10.2.0.0/24", 26, "all()")
            },
            pool("fd00::/120", 122, "all()"),
        ];
        let got = usable_pools(&pools, Family::V4, &labels, false, None).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].cidr.to_string(), "10.0.0.0/24");
        let named = usable_pools(
            &pools,
            Family::V4,
            &labels,
            false,
            Some(&["10.1.0.0/24".to_string()]),
        )
        .unwrap();
        assert_eq!(named.len(), 1);
        // A Manual pool only when named.
        let manual = vec![Pool {
            manual: true,
            ..pool("10.3.0.0/24", 26, "all()")
        }];
        assert!(usable_pools(&manual, Family::V4, &labels, false, None)
            .unwrap()
            .is_empty());
        assert!(usable_pools(&manual, Family::V4, &labels, true, None)
            .unwrap()
            .is_empty());
        let named = ["p-10.3.0.0/24".to_string()];
        assert_eq!(
            usable_pools(&manual, Family::V4, &labels, false, Some(&named))
                .unwrap()
                .len(),
            1
        );
        let bad = vec![pool("10.0.0.0/24", 26, "rack ==")];
        let err = usable_pools(&bad, Family::V4, &labels, false, None).unwrap_err();
        assert!(err.to_string().contains("nodeSelector"), "{err}");
    }
}
