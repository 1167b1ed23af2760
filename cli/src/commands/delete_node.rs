//! `calyx delete node NAME`: the Node and everything of it the datastore keeps, removed as
//! calicoctl removes it (libcalico-go's `nodes.Delete`), in this order so that a command cut
//! short is simply run again:
//! 1. its IPAM state ([`Ipam::release_node`]): its addresses in every block (pods, borrowed
//!    addresses, tunnel addresses), its blocks (deleted when empty, otherwise kept without
//!    affinity for the other nodes' addresses in them), its affinities and handles;
//! 2. its WorkloadEndpoints (`spec.node` = NAME);
//! 3. its node-specific BGPPeers (`spec.node` = NAME), and the `node.NAME` BGPConfiguration
//!    and FelixConfiguration;
//! 4. the Node.
//!
//! Every write is a compare-and-swap transaction guarded by the revision read just before it:
//! an object changed meanwhile by someone else is not deleted blindly (the command fails and
//! can be run again).

use anyhow::{Context, Result};
use calyx_datastore::client::{ClientError, ResourceClient};
use calyx_datastore::resources::{Kind, Resource, WORKLOAD_ENDPOINT_PREFIX};
use calyx_datastore::store::{Store, StoreError};
use calyx_ipam::Ipam;

/// What [`delete_node`] removed besides the Node.
#[derive(Debug, Default)]
pub struct NodeRemoval {
    /// Addresses released.
    pub addresses: usize,
    /// Blocks deleted (empty once the node's addresses were released).
    pub deleted_blocks: usize,
    /// Blocks kept for other nodes' addresses, no longer affine to the node.
    pub unaffined_blocks: usize,
    /// WorkloadEndpoints deleted.
    pub workload_endpoints: usize,
    /// BGPPeers deleted.
    pub bgp_peers: Vec<String>,
    /// Per-node configurations deleted (`BGPConfiguration node.NAME`, ...).
    pub configurations: Vec<String>,
}

/// Removes node `name` and what it leaves in the datastore; the Node must exist.
pub async fn delete_node<S: Store + Clone>(
    client: &ResourceClient<S>,
    name: &str,
) -> Result<NodeRemoval> {
    let store = client.store();
    let mut out = NodeRemoval::default();

    let ipam = Ipam::new(store.clone());
    let released = ipam
        .release_node(name)
        .await
        .with_context(|| format!("cannot release the IPAM state of node {name:?}"))?;
    out.addresses = released.released.len();
    out.deleted_blocks = released.deleted_blocks.len();
    out.unaffined_blocks = released.unaffined_blocks.len();

    let weps = store.list(WORKLOAD_ENDPOINT_PREFIX).await?;
    for kv in weps.kvs {
        // Decoded loosely: only `spec.node` matters here, whatever else a version stored.
        let on_node = serde_json::from_slice::<serde_json::Value>(&kv.value)
            .ok()
            .is_some_and(|v| v["spec"]["node"].as_str() == Some(name));
        if on_node && delete_guarded(store, &kv.key, kv.mod_revision).await? {
            out.workload_endpoints += 1;
        }
    }

    for resource in client.list(Kind::BGPPeer).await? {
        let Resource::BGPPeer(peer) = resource else {
            continue;
        };
        if peer.spec.node == name
            && delete_resource(client, Kind::BGPPeer, &peer.metadata.name).await?
        {
            out.bgp_peers.push(peer.metadata.name.clone());
        }
    }
    let config_name = format!("node.{name}");
    if delete_resource(client, Kind::BGPConfiguration, &config_name).await? {
        out.configurations
            .push(format!("BGPConfiguration {config_name}"));
    }
    let felix_key = Kind::FelixConfiguration.key(&config_name);
    if let Some(kv) = store.get(&felix_key).await? {
        if delete_guarded(store, &kv.key, kv.mod_revision).await? {
            out.configurations
                .push(format!("FelixConfiguration {config_name}"));
        }
    }

    client
        .delete(Kind::Node, name)
        .await
        .with_context(|| format!("cannot delete Node {name:?}"))?;
    Ok(out)
}

/// Deletes one resource guarded by the revision just read; `false` when it did not exist.
async fn delete_resource<S: Store>(
    client: &ResourceClient<S>,
    kind: Kind,
    name: &str,
) -> Result<bool> {
    match client.delete(kind, name).await {
        Ok(_) => Ok(true),
        Err(ClientError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot delete {} {name:?}", kind.as_str())),
    }
}

/// Deletes `key` if it is still at `revision`; `false` when it is already gone.
async fn delete_guarded<S: Store>(store: &S, key: &str, revision: i64) -> Result<bool> {
    match store.delete(key, Some(revision)).await {
        Ok(_) => Ok(true),
        Err(StoreError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot delete {key}")),
    }
}
