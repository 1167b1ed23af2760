//! Start-up writes of the node daemon, each idempotent and guarded by revisions: the default
//! pools, `ClusterInformation`, this node's `Node` resource, its tunnel addresses and VTEP MAC;
//! and the wait for `datastoreReady` before any address is assigned.

use std::net::IpAddr;

use anyhow::{Context, Result};
use calyx_datastore::client::{ClientError, ResourceClient, WriteMode};
use calyx_datastore::resources::{
    new_cluster_guid, ClusterInformation, EncapMode, IPPool, IPPoolSpec, Kind, MacAddr, Node,
    NodeBGPSpec, Resource,
};
use calyx_datastore::store::Store;
use calyx_datastore::store::StoreError;
use calyx_ipam::{Ipam, TunnelKind};
use ipnet::IpNet;
use rand::Rng;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::cluster::ClusterState;
use super::config::{DefaultPool, NodeConfig};

/// How often creating the default pool is retried when another node races us.
const MAX_ATTEMPTS: usize = 10;

/// Creates `default-ipv4-ippool` (and `default-ipv6-ippool`) when no pool of that family
/// exists, as calico-node does. Another node creating it at the same time is fine.
pub async fn ensure_default_pools<S: Store>(
    client: &ResourceClient<S>,
    config: &NodeConfig,
) -> Result<()> {
    for (pool, name, v6) in [
        (&config.default_ipv4_pool, "default-ipv4-ippool", false),
        (&config.default_ipv6_pool, "default-ipv6-ippool", true),
    ] {
        let Some(pool) = pool else { continue };
        // Every node starting at once tries this: whoever loses the race sees the pool on
        // the next look.
        for _ in 0..MAX_ATTEMPTS {
            let existing = client.list(Kind::IPPool).await?;
            if existing
                .iter()
                .filter_map(Resource::as_ippool)
                .any(|p| p.spec.cidr.addr().is_ipv6() == v6)
            {
                break;
            }
            let resource = Resource::IPPool(IPPool::new(name, pool_spec(pool)));
            match client.write_all(WriteMode::Create, vec![resource]).await {
                Ok(_) => {
                    info!(pool = name, cidr = %pool.cidr, "created the default pool");
                    break;
                }
                Err(ClientError::AlreadyExists { .. }) | Err(ClientError::Conflict { .. }) => {}
                Err(e) => return Err(e).with_context(|| format!("cannot create {name}")),
            }
        }
    }
    Ok(())
}

/// The version this daemon records as the cluster's `calicoVersion` (`v0.1.0`, written as
/// Calico writes its own).
pub const CALYX_VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// What calico-node's start-up does with `clusterinformations/default` (libcalico-go's
/// `EnsureInitialized`): create it when absent (a random GUID, `cluster_type`, this version,
/// `datastoreReady: true`), else record this version, fill a missing GUID, set an unset
/// `datastoreReady` to true (an explicit `false` stays) and add missing cluster types. Fields
/// Calyx does not model are written back as they were. Another node writing at the same time
/// is retried.
pub async fn ensure_cluster_information<S: Store>(
    client: &ResourceClient<S>,
    cluster_type: &str,
) -> Result<ClusterInformation> {
    for _ in 0..MAX_ATTEMPTS {
        let (mut ci, created) = match client
            .cluster_information()
            .await
            .context("cannot read ClusterInformation")?
        {
            Some(ci) => (ci, false),
            None => (
                ClusterInformation::created(CALYX_VERSION, cluster_type, new_cluster_guid()),
                true,
            ),
        };
        if !created && !ci.initialize(CALYX_VERSION, cluster_type, new_cluster_guid) {
            return Ok(ci);
        }
        match client.write_cluster_information(&ci).await {
            Ok(revision) => {
                ci.revision = Some(revision);
                info!(
                    created,
                    version = %ci.spec.calico_version,
                    cluster_type = %ci.spec.cluster_type,
                    datastore_ready = ?ci.spec.datastore_ready,
                    "ClusterInformation written"
                );
                return Ok(ci);
            }
            // Another node got there first: read its write and start again.
            Err(ClientError::Store(
                StoreError::AlreadyExists { .. } | StoreError::Conflict { .. },
            )) => continue,
            Err(e) => return Err(e).context("cannot write ClusterInformation"),
        }
    }
    anyhow::bail!("cannot write ClusterInformation: other writers kept changing it")
}

/// How often readiness is looked at again while `datastoreReady` is false (Felix waits 1 s).
const READY_POLL: Duration = Duration::from_secs(1);
/// How often the waiting is logged again.
const READY_LOG_EVERY: Duration = Duration::from_secs(30);

/// Waits while `clusterinformations/default` says `datastoreReady: false` (a datastore
/// migration in progress), as Calico's components do before they touch it: no block is
/// claimed and no tunnel address assigned until it is true (or unset) again. Logs when the wait
/// starts, every 30 s while it lasts, and when it ends. A read that fails is retried.
pub async fn wait_until_datastore_ready<S: Store>(client: &ResourceClient<S>) {
    let started = Instant::now();
    let mut logged: Option<Instant> = None;
    loop {
        let ready = match client.cluster_information().await {
            Ok(ci) => ci.is_none_or(|ci| ci.datastore_ready()),
            Err(e) => {
                warn!(error = %e, "cannot read ClusterInformation; retrying");
                false
            }
        };
        if ready {
            if logged.is_some() {
                info!(
                    waited_seconds = started.elapsed().as_secs(),
                    "datastore ready again (ClusterInformation datastoreReady is true)"
                );
            }
            return;
        }
        if logged.is_none_or(|t| t.elapsed() >= READY_LOG_EVERY) {
            warn!(
                waited_seconds = started.elapsed().as_secs(),
                "datastore not ready (ClusterInformation datastoreReady is false): waiting \
                 before assigning any address"
            );
            logged = Some(Instant::now());
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Fails (to be retried) while `datastoreReady` is false: a runtime check before assigning
/// an address outside start-up.
async fn require_datastore_ready<S: Store>(client: &ResourceClient<S>) -> Result<()> {
    let ci = client
        .cluster_information()
        .await
        .context("cannot read ClusterInformation")?;
    if ci.is_some_and(|ci| !ci.datastore_ready()) {
        anyhow::bail!(
            "datastore not ready (ClusterInformation datastoreReady is false): not assigning \
             tunnel addresses yet"
        );
    }
    Ok(())
}

fn pool_spec(pool: &DefaultPool) -> IPPoolSpec {
    let mut spec = IPPoolSpec::new(pool.cidr);
    spec.block_size = pool.block_size;
    spec.ipip_mode = pool.ipip;
    spec.vxlan_mode = pool.vxlan;
    spec.nat_outgoing = pool.nat_outgoing;
    spec.node_selector = pool.node_selector.clone();
    spec
}

/// Reads this node's `Node` (a new one when absent), lets `change` edit it, and writes it back
/// guarded by the revision read (see [`ResourceClient::modify`]).
// `ClientError` is large, but this is the cold error path of a start-up write.
#[allow(clippy::result_large_err)]
pub async fn update_node<S: Store>(
    client: &ResourceClient<S>,
    name: &str,
    change: impl Fn(&mut Node),
) -> Result<Node> {
    let fresh = Resource::Node(Node::new(name, Default::default()));
    let written = client
        .modify(Kind::Node, name, Some(&fresh), |current| {
            let mut node = current
                .as_node()
                .cloned()
                .ok_or_else(|| ClientError::BadPatch("not a Node".into()))?;
            change(&mut node);
            Ok(Resource::Node(node))
        })
        .await
        .with_context(|| format!("cannot write Node {name:?}"))?;
    match written {
        Resource::Node(node) => Ok(node),
        other => anyhow::bail!("{} {name:?} is not a Node", other.kind()),
    }
}

/// Writes the node's addresses and AS into its `Node` resource.
pub async fn write_node_addresses<S: Store>(
    client: &ResourceClient<S>,
    config: &NodeConfig,
    ipv4: Option<IpNet>,
    ipv6: Option<IpNet>,
) -> Result<Node> {
    update_node(client, &config.nodename, |node| {
        let bgp = node.spec.bgp.get_or_insert_with(NodeBGPSpec::default);
        bgp.ipv4_address = match ipv4 {
            Some(IpNet::V4(n)) => Some(n),
            _ => None,
        };
        bgp.ipv6_address = match ipv6 {
            Some(IpNet::V6(n)) => Some(n),
            _ => None,
        };
        if config.as_number.is_some() {
            bgp.as_number = config.as_number;
        }
    })
    .await
}

/// A random locally administered unicast MAC, as Calico picks for a node's VTEP.
fn random_vtep_mac() -> MacAddr {
    let mut mac: [u8; 6] = rand::rng().random();
    mac[0] = (mac[0] & 0xfe) | 0x02;
    MacAddr(mac)
}

/// When a pool needs a tunnel, gives this node its tunnel address (from IPAM, under Calico's
/// handle names) and VTEP MAC, and records them in its `Node`. Idempotent: run again whenever
/// the pools change (a pool switched to VXLAN at runtime needs them then).
pub async fn ensure_tunnels<S: Store>(
    client: &ResourceClient<S>,
    ipam: &Ipam<S>,
    nodename: &str,
    state: &ClusterState,
) -> Result<()> {
    let v4 = |p: &&IPPool| p.spec.cidr.addr().is_ipv4() && !p.spec.disabled;
    let wants_vxlan = state
        .pools
        .values()
        .filter(v4)
        .any(|p| p.spec.vxlan_mode != EncapMode::Never);
    let wants_ipip = state
        .pools
        .values()
        .filter(v4)
        .any(|p| p.spec.ipip_mode != EncapMode::Never);
    let node = state.nodes.get(nodename);
    let has_vxlan = node.is_some_and(|n| {
        n.spec.ipv4_vxlan_tunnel_addr.is_some() && n.spec.vxlan_tunnel_mac_addr.is_some()
    });
    let has_ipip = node.is_some_and(|n| {
        n.spec
            .bgp
            .as_ref()
            .is_some_and(|b| b.ipv4_ipip_tunnel_addr.is_some())
    });
    if (wants_vxlan && !has_vxlan) || (wants_ipip && !has_ipip) {
        require_datastore_ready(client).await?;
    }
    if wants_vxlan && !has_vxlan {
        let addr = ipam
            .assign_tunnel_address(nodename, TunnelKind::Vxlan)
            .await
            .context("cannot assign the VXLAN tunnel address")?;
        let IpAddr::V4(addr) = addr else {
            anyhow::bail!("IPAM returned a non-IPv4 VXLAN tunnel address {addr}");
        };
        let mac = random_vtep_mac();
        update_node(client, nodename, |n| {
            n.spec.ipv4_vxlan_tunnel_addr = Some(addr);
            if n.spec.vxlan_tunnel_mac_addr.is_none() {
                n.spec.vxlan_tunnel_mac_addr = Some(mac);
            }
        })
        .await?;
        info!(address = %addr, "VXLAN tunnel address assigned");
    }
    ensure_vxlan_v6(client, ipam, nodename, state).await?;
    if wants_ipip && !has_ipip {
        let addr = ipam
            .assign_tunnel_address(nodename, TunnelKind::Ipip)
            .await
            .context("cannot assign the IPIP tunnel address")?;
        let IpAddr::V4(addr) = addr else {
            anyhow::bail!("IPAM returned a non-IPv4 IPIP tunnel address {addr}");
        };
        update_node(client, nodename, |n| {
            n.spec
                .bgp
                .get_or_insert_with(NodeBGPSpec::default)
                .ipv4_ipip_tunnel_addr = Some(addr);
        })
        .await?;
        info!(address = %addr, "IPIP tunnel address assigned");
    }
    Ok(())
}

/// The IPv6 half of [`ensure_tunnels`]: when an enabled IPv6 pool uses VXLAN and this node has
/// an IPv6 address, its `ipv6VXLANTunnelAddr` (IPAM handle `vxlan-v6-tunnel-addr-<node>`, as
/// calico-node's `allocateip`) and `vxlanTunnelMACAddrV6` (its own MAC, as Felix picks one per
/// device).
async fn ensure_vxlan_v6<S: Store>(
    client: &ResourceClient<S>,
    ipam: &Ipam<S>,
    nodename: &str,
    state: &ClusterState,
) -> Result<()> {
    let wants = state.pools.values().any(|p| {
        p.spec.cidr.addr().is_ipv6() && !p.spec.disabled && p.spec.vxlan_mode != EncapMode::Never
    });
    let Some(node) = state.nodes.get(nodename) else {
        return Ok(());
    };
    let has_v6_address = node
        .spec
        .bgp
        .as_ref()
        .is_some_and(|b| b.ipv6_address.is_some());
    let has =
        node.spec.ipv6_vxlan_tunnel_addr.is_some() && node.spec.vxlan_tunnel_mac_addr_v6.is_some();
    if !wants || !has_v6_address || has {
        return Ok(());
    }
    require_datastore_ready(client).await?;
    let addr = ipam
        .assign_tunnel_address(nodename, TunnelKind::VxlanV6)
        .await
        .context("cannot assign the IPv6 VXLAN tunnel address")?;
    let IpAddr::V6(addr) = addr else {
        anyhow::bail!("IPAM returned a non-IPv6 IPv6 VXLAN tunnel address {addr}");
    };
    let mac = random_vtep_mac();
    update_node(client, nodename, |n| {
        n.spec.ipv6_vxlan_tunnel_addr = Some(addr);
        if n.spec.vxlan_tunnel_mac_addr_v6.is_none() {
            n.spec.vxlan_tunnel_mac_addr_v6 = Some(mac);
        }
    })
    .await?;
    info!(address = %addr, "IPv6 VXLAN tunnel address assigned");
    Ok(())
}
