//! Helpers that write pools and nodes into a store: for tests, benchmarks and demos.

use std::collections::BTreeMap;

use calyx_datastore::resources::{
    AssignmentMode, IPPool, IPPoolSpec, IPReservation, IPReservationSpec, Kind, Node, NodeSpec,
};
use calyx_datastore::store::Store;
use ipnet::IpNet;

use crate::error::{IpamError, Result};

/// Writes (or overwrites) an IP pool `name` with `cidr`, `block_size` and `node_selector`.
pub async fn put_pool<S: Store>(
    store: &S,
    name: &str,
    cidr: &str,
    block_size: u8,
    node_selector: &str,
) -> Result<()> {
    let cidr: IpNet = cidr
        .parse()
        .map_err(|_| IpamError::Invalid(format!("bad CIDR {cidr:?}")))?;
    let mut spec = IPPoolSpec::new(cidr);
    spec.block_size = block_size;
    spec.node_selector = node_selector.to_string();
    let pool = IPPool::new(name, spec);
    let value = serde_json::to_vec(&pool).map_err(|e| IpamError::Invalid(e.to_string()))?;
    let key = Kind::IPPool.key(name);
    let txn = calyx_datastore::store::Transaction::new()
        .then(calyx_datastore::store::Operation::put(key, value));
    store.transaction(txn).await?;
    Ok(())
}

/// Disables or enables a pool.
pub async fn set_pool_disabled<S: Store>(store: &S, name: &str, disabled: bool) -> Result<()> {
    let key = Kind::IPPool.key(name);
    let Some(kv) = store.get(&key).await? else {
        return Err(IpamError::Invalid(format!("no pool {name}")));
    };
    let mut pool: IPPool = crate::ipam::decode(&kv)?;
    pool.spec.disabled = disabled;
    let value = serde_json::to_vec(&pool).map_err(|e| IpamError::Invalid(e.to_string()))?;
    store.update(&key, value, kv.mod_revision).await?;
    Ok(())
}

/// Writes (or overwrites) an IPReservation `name` reserving `cidrs`.
pub async fn put_reservation<S: Store>(store: &S, name: &str, cidrs: &[&str]) -> Result<()> {
    let spec = IPReservationSpec {
        reserved_cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    };
    let r = IPReservation::new(name, spec);
    let value = serde_json::to_vec(&r).map_err(|e| IpamError::Invalid(e.to_string()))?;
    let txn = calyx_datastore::store::Transaction::new().then(
        calyx_datastore::store::Operation::put(Kind::IPReservation.key(name), value),
    );
    store.transaction(txn).await?;
    Ok(())
}

/// Sets a pool's `assignmentMode` to `Manual` (`true`) or back to unset (automatic).
pub async fn set_pool_manual<S: Store>(store: &S, name: &str, manual: bool) -> Result<()> {
    let key = Kind::IPPool.key(name);
    let Some(kv) = store.get(&key).await? else {
        return Err(IpamError::Invalid(format!("no pool {name}")));
    };
    let mut pool: IPPool = crate::ipam::decode(&kv)?;
    pool.spec.assignment_mode = manual.then_some(AssignmentMode::Manual);
    let value = serde_json::to_vec(&pool).map_err(|e| IpamError::Invalid(e.to_string()))?;
    store.update(&key, value, kv.mod_revision).await?;
    Ok(())
}

/// Writes (or overwrites) a node `name` with `labels`.
pub async fn put_node<S: Store>(store: &S, name: &str, labels: &[(&str, &str)]) -> Result<()> {
    let mut node = Node::new(name, NodeSpec::default());
    node.metadata.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>();
    let value = serde_json::to_vec(&node).map_err(|e| IpamError::Invalid(e.to_string()))?;
    let txn = calyx_datastore::store::Transaction::new().then(
        calyx_datastore::store::Operation::put(Kind::Node.key(name), value),
    );
    store.transaction(txn).await?;
    Ok(())
}

/// Deletes a node resource (not its IPAM data: see `Ipam::release_node`).
pub async fn delete_node<S: Store>(store: &S, name: &str) -> Result<()> {
    let txn = calyx_datastore::store::Transaction::new().then(
        calyx_datastore::store::Operation::delete(Kind::Node.key(name)),
    );
    store.transaction(txn).await?;
    Ok(())
}
