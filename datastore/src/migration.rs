//! Datastore migration steps on the [`ResourceClient`], as calicoctl has them: locking the
//! datastore (`calicoctl datastore migrate lock|unlock`, which sets
//! `ClusterInformation.spec.datastoreReady`) and splitting an IP pool into smaller ones
//! (`calicoctl ipam split`), which calicoctl only allows while the datastore is locked.
//!
//! While locked, Calico's CNI plugin refuses ADD and DEL, and Calyx's plugins and its
//! garbage collector do the same, so nothing assigns or frees addresses while pools change.
//!
//! The split differs from calicoctl's in one respect: calicoctl disables the old pool, creates
//! the new ones one by one and then deletes the old one, so a failure half-way leaves a
//! disabled pool and some of its parts; here the old pool's removal and the new pools'
//! creation are one etcd transaction guarded by the old pool's revision, and a failure
//! changes nothing.

use ipnet::IpNet;

use crate::client::{new_uid, rfc3339_now, ClientError, ResourceClient};
use crate::resources::{
    check_pool_overlaps, ClusterInformation, IPPool, Kind, Resource, ValidationError,
    CLUSTER_INFORMATION_KEY, CLUSTER_INFORMATION_NAME,
};
use crate::store::{Precondition, Store, StoreError, Transaction};

/// The most parts one split may make: the pools are created in one etcd transaction, and etcd
/// allows 128 operations per transaction by default (`--max-txn-ops`). A larger split is two
/// splits in a row.
pub const MAX_SPLIT_PARTS: u32 = 64;

/// Metadata fields that identify one stored object and are not copied to the parts of a split
/// pool (calicoctl clears the same: uid, resourceVersion, generation, selfLink,
/// creationTimestamp, generateName).
const PER_OBJECT_METADATA: [&str; 3] = ["generation", "selfLink", "generateName"];

/// Errors of the migration steps.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// A split was asked while the datastore is not locked.
    #[error(
        "datastore is not locked. Run the `calyx datastore migrate lock` command in order to \
         split the IP pools"
    )]
    NotLocked,
    /// No pool has this name or CIDR.
    #[error("unable to find an IP pool {0}")]
    NoSuchPool(String),
    /// The number of parts is not a power of two of at least 2, or above the limit.
    #[error(
        "number to split CIDR into is not a valid power of 2 between 2 and {MAX_SPLIT_PARTS}: {0}"
    )]
    BadParts(u32),
    /// The pool is too small for that many parts.
    #[error("the CIDR {cidr} is not large enough to be split into {parts} parts")]
    TooSmall {
        /// The pool's CIDR.
        cidr: IpNet,
        /// The parts asked for.
        parts: u32,
    },
    /// A part would not be a valid pool (its blocks would not fit, its name is too long, ...).
    #[error("{0}")]
    Invalid(ValidationError),
    /// The pool or the cluster information changed while splitting; nothing was written.
    #[error("IP pool {0:?} was modified by someone else while splitting; nothing was changed, try again")]
    Conflict(String),
    /// The datastore failed (boxed: a client error is large and rare).
    #[error(transparent)]
    Client(Box<ClientError>),
}

impl From<ClientError> for MigrationError {
    fn from(e: ClientError) -> Self {
        MigrationError::Client(Box::new(e))
    }
}

impl From<StoreError> for MigrationError {
    fn from(e: StoreError) -> Self {
        ClientError::from(e).into()
    }
}

/// Which pool to split: by name or by CIDR (as `calicoctl ipam split --name|--cidr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolRef {
    /// `metadata.name`.
    Name(String),
    /// `spec.cidr`.
    Cidr(IpNet),
}

/// Checks that `parts` is a power of two from 2 to [`MAX_SPLIT_PARTS`].
pub fn check_parts(parts: u32) -> Result<(), MigrationError> {
    if !parts.is_power_of_two() || !(2..=MAX_SPLIT_PARTS).contains(&parts) {
        return Err(MigrationError::BadParts(parts));
    }
    Ok(())
}

/// The CIDRs of `parts` equal parts of `cidr`, in address order. `parts` must be a power of two
/// from 2 to [`MAX_SPLIT_PARTS`] and `cidr` long enough to hold them.
pub fn split_cidr(cidr: IpNet, parts: u32) -> Result<Vec<IpNet>, MigrationError> {
    check_parts(parts)?;
    let extra_bits = parts.trailing_zeros() as u8;
    let cidr = cidr.trunc();
    let new_len = cidr.prefix_len() + extra_bits;
    if new_len > cidr.max_prefix_len() {
        return Err(MigrationError::TooSmall { cidr, parts });
    }
    // `subnets` yields exactly 2^extra_bits parts in address order.
    let subnets = cidr
        .subnets(new_len)
        .map_err(|_| MigrationError::TooSmall { cidr, parts })?;
    Ok(subnets.collect())
}

/// The name of part `index` of pool `name`: `split-<name>-<index>`, the name shortened to 245
/// characters when the result would pass Kubernetes' 253, as calicoctl does.
pub fn split_name(name: &str, index: usize) -> String {
    let full = format!("split-{name}-{index}");
    if full.len() <= 253 {
        return full;
    }
    let mut cut = 245.min(name.len());
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("split-{}-{index}", &name[..cut])
}

/// True while a migration holds the datastore (`datastoreReady: false` in
/// `clusterinformations/default`), read straight from a store (for the CNI plugins and the
/// agent, which hold a store rather than a client). Not initialised yet means not locked; an
/// undecodable object is an error, not a guess.
pub async fn datastore_locked<S: Store>(store: &S) -> Result<bool, ClientError> {
    let Some(kv) = store.get(CLUSTER_INFORMATION_KEY).await? else {
        return Ok(false);
    };
    let ci = ClusterInformation::from_json(&kv.value).map_err(|e| ClientError::Corrupt {
        key: kv.key.clone(),
        reason: e.to_string(),
    })?;
    Ok(!ci.datastore_ready())
}

impl<S: Store> ResourceClient<S> {
    /// Sets `datastoreReady` to `!locked` in `clusterinformations/default`, creating the object
    /// when no component has written it yet (as calicoctl's `EnsureInitialized`), keeping every
    /// other field as stored. Retried when another writer got there first.
    pub async fn set_datastore_locked(&self, locked: bool) -> Result<(), ClientError> {
        let mut last = None;
        for _ in 0..10 {
            let mut ci = match self.cluster_information().await? {
                Some(ci) => ci,
                None => ClusterInformation::created("", "", crate::resources::new_cluster_guid()),
            };
            ci.spec.datastore_ready = Some(!locked);
            match self.write_cluster_information(&ci).await {
                Ok(_) => return Ok(()),
                Err(
                    e @ ClientError::Store(
                        StoreError::Conflict { .. } | StoreError::AlreadyExists { .. },
                    ),
                ) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        // Ten writers in a row got there first: report the last race.
        Err(last.unwrap_or_else(|| {
            ClientError::Store(StoreError::Backend(format!(
                "clusterinformations/{CLUSTER_INFORMATION_NAME} kept changing"
            )))
        }))
    }

    /// True while a migration holds the datastore (`datastoreReady: false`). A datastore no
    /// component has initialised yet is not locked.
    pub async fn datastore_locked(&self) -> Result<bool, ClientError> {
        datastore_locked(self.store()).await
    }

    /// Splits a pool into `parts` equal pools named `split-<name>-<i>`, each a copy of the old
    /// one (labels, annotations, every spec field, fields Calyx does not model) with its own
    /// CIDR and `disabled: false`, as calicoctl does; the old pool is deleted. Only while the
    /// datastore is locked. Every part is validated (its blocks must still fit: `blockSize`
    /// may not be a shorter prefix than the part) and checked against the other pools before
    /// anything is written; then one transaction, guarded by the old pool's revision and the
    /// new names' absence, writes it all. Allocations and blocks stay where they are: blocks
    /// belong to the pool whose CIDR holds them.
    pub async fn split_pool(
        &self,
        which: &PoolRef,
        parts: u32,
    ) -> Result<Vec<IPPool>, MigrationError> {
        if !self.datastore_locked().await? {
            return Err(MigrationError::NotLocked);
        }
        let pools: Vec<IPPool> = self
            .list(Kind::IPPool)
            .await?
            .into_iter()
            .filter_map(|r| match r {
                Resource::IPPool(p) => Some(p),
                _ => None,
            })
            .collect();
        let old = pools
            .iter()
            .find(|p| match which {
                PoolRef::Name(n) => &p.metadata.name == n,
                PoolRef::Cidr(c) => p.spec.cidr == *c,
            })
            .ok_or_else(|| {
                MigrationError::NoSuchPool(match which {
                    PoolRef::Name(n) => format!("named {n:?}"),
                    PoolRef::Cidr(c) => format!("with CIDR {c}"),
                })
            })?;
        let revision: i64 = old
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| MigrationError::Conflict(old.metadata.name.clone()))?;
        let now = rfc3339_now();
        let mut made = Vec::with_capacity(parts as usize);
        for (i, cidr) in split_cidr(old.spec.cidr, parts)?.into_iter().enumerate() {
            let mut part = old.clone();
            part.metadata.name = split_name(&old.metadata.name, i);
            part.metadata.resource_version = None;
            part.metadata.uid = Some(new_uid());
            part.metadata.creation_timestamp = Some(now.clone());
            for field in PER_OBJECT_METADATA {
                part.metadata.extra.remove(field);
            }
            part.spec.cidr = cidr;
            part.spec.disabled = false;
            part.validate().map_err(MigrationError::Invalid)?;
            made.push(part);
        }
        // The parts against each other and every pool but the one they replace.
        let mut all: Vec<&IPPool> = pools
            .iter()
            .filter(|p| p.metadata.name != old.metadata.name)
            .collect();
        all.extend(made.iter());
        check_pool_overlaps(&all).map_err(MigrationError::Invalid)?;

        let old_key = Kind::IPPool.key(&old.metadata.name);
        let mut txn = Transaction::new().when(Precondition::ModRevision(old_key.clone(), revision));
        for part in &made {
            let resource = Resource::IPPool(part.clone());
            txn =
                txn.when(Precondition::Absent(resource.key()))
                    .then(crate::store::Operation::put(
                        resource.key(),
                        resource.to_json(),
                    ));
        }
        txn = txn.then(crate::store::Operation::delete(old_key));
        match self.store().transaction(txn).await {
            Ok(_) => Ok(made),
            Err(StoreError::TransactionFailed) => {
                Err(MigrationError::Conflict(old.metadata.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::client::WriteMode;
    use crate::resources::parse_documents;
    use crate::store::memory::MemoryStore;

    fn nets(v: &[IpNet]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn cidrs_split_into_powers_of_two_in_order() {
        let v4: IpNet = "10.0.0.0/16".parse().unwrap();
        assert_eq!(
            nets(&split_cidr(v4, 4).unwrap()),
            [
                "10.0.0.0/18",
                "10.0.64.0/18",
                "10.0.128.0/18",
                "10.0.192.0/18"
            ]
        );
        let v6: IpNet = "fd00:1::/48".parse().unwrap();
        assert_eq!(
            nets(&split_cidr(v6, 2).unwrap()),
            ["fd00:1::/49", "fd00:1:0:8000::/49"]
        );
        assert_eq!(split_cidr(v4, 64).unwrap().len(), 64);
        for bad in [0, 1, 3, 6, 128] {
            assert!(
                matches!(split_cidr(v4, bad), Err(MigrationError::BadParts(n)) if n == bad),
                "{bad}"
            );
        }
        let tiny: IpNet = "10.0.0.0/31".parse().unwrap();
        assert!(matches!(
            split_cidr(tiny, 4),
            Err(MigrationError::TooSmall { .. })
        ));
        assert_eq!(split_cidr(tiny, 2).unwrap().len(), 2);
    }

    #[test]
    fn part_names_follow_calicoctl() {
        assert_eq!(
            split_name("default-ipv4-ippool", 3),
            "split-default-ipv4-ippool-3"
        );
        let long = "a".repeat(250);
        let name = split_name(&long, 1);
        assert_eq!(name, format!("split-{}-1", "a".repeat(245)));
        assert!(name.len() <= 253);
    }

    const STORED_POOL: &str = r#"{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"p","uid":"u1","creationTimestamp":"2024-01-01T00:00:00Z","generation":3,"labels":{"zone":"a"}},"spec":{"cidr":"10.9.0.0/16","blockSize":26,"vxlanMode":"Always","natOutgoing":true,"nodeSelector":"all()","futureField":{"x":1}}}"#;

    async fn client_with_pool() -> ResourceClient<MemoryStore> {
        let client = ResourceClient::new(MemoryStore::new());
        client
            .store()
            .create(&Kind::IPPool.key("p"), STORED_POOL.as_bytes().to_vec())
            .await
            .unwrap();
        client
    }

    async fn keys(client: &ResourceClient<MemoryStore>) -> Vec<String> {
        client
            .store()
            .list("/calico/")
            .await
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| kv.key)
            .collect()
    }

    #[tokio::test]
    async fn lock_creates_or_updates_cluster_information() {
        let client = ResourceClient::new(MemoryStore::new());
        assert!(!client.datastore_locked().await.unwrap());
        client.set_datastore_locked(true).await.unwrap();
        assert!(client.datastore_locked().await.unwrap());
        client.set_datastore_locked(false).await.unwrap();
        assert!(!client.datastore_locked().await.unwrap());
        // A field written by Calico survives both.
        let kv = client
            .store()
            .get(CLUSTER_INFORMATION_KEY)
            .await
            .unwrap()
            .unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
        v["spec"]["futureKnob"] = serde_json::json!(7);
        client
            .store()
            .update(
                CLUSTER_INFORMATION_KEY,
                serde_json::to_vec(&v).unwrap(),
                kv.mod_revision,
            )
            .await
            .unwrap();
        client.set_datastore_locked(true).await.unwrap();
        let kv = client
            .store()
            .get(CLUSTER_INFORMATION_KEY)
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
        assert_eq!(v["spec"]["futureKnob"], 7);
        assert_eq!(v["spec"]["datastoreReady"], false);
    }

    #[tokio::test]
    async fn split_needs_the_lock_and_writes_nothing_on_error() {
        let client = client_with_pool().await;
        let before = keys(&client).await;
        let err = client
            .split_pool(&PoolRef::Name("p".into()), 4)
            .await
            .unwrap_err();
        assert!(matches!(err, MigrationError::NotLocked), "{err}");
        client.set_datastore_locked(true).await.unwrap();
        let locked = keys(&client).await;
        assert_eq!(locked.len(), before.len() + 1);
        // No such pool (by name, by CIDR), not a power of two, over the limit.
        for (which, parts) in [
            (PoolRef::Name("nope".into()), 2),
            (PoolRef::Cidr("10.9.0.0/17".parse().unwrap()), 2),
            (PoolRef::Name("p".into()), 3),
            (PoolRef::Name("p".into()), 1024),
        ] {
            assert!(client.split_pool(&which, parts).await.is_err());
        }
        assert_eq!(keys(&client).await, locked);
    }

    #[tokio::test]
    async fn split_refuses_parts_smaller_than_a_block() {
        let client = ResourceClient::new(MemoryStore::new());
        let docs = parse_documents(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: small}\nspec: {cidr: 10.8.0.0/24, blockSize: 26}\n",
        )
        .unwrap();
        client.write_all(WriteMode::Create, docs).await.unwrap();
        client.set_datastore_locked(true).await.unwrap();
        // Four /26 parts hold one block each; eight /27 parts could not hold a /26 block.
        let err = client
            .split_pool(&PoolRef::Name("small".into()), 8)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("spec.blockSize"), "{err}");
        let parts = client
            .split_pool(&PoolRef::Cidr("10.8.0.0/24".parse().unwrap()), 4)
            .await
            .unwrap();
        assert_eq!(parts.len(), 4);
    }

    #[tokio::test]
    async fn split_copies_the_pool_and_replaces_it_at_once() {
        let client = client_with_pool().await;
        client.set_datastore_locked(true).await.unwrap();
        let parts = client
            .split_pool(&PoolRef::Name("p".into()), 2)
            .await
            .unwrap();
        assert_eq!(parts.len(), 2);
        assert!(client
            .store()
            .get(&Kind::IPPool.key("p"))
            .await
            .unwrap()
            .is_none());
        for (i, cidr) in ["10.9.0.0/17", "10.9.128.0/17"].iter().enumerate() {
            let kv = client
                .store()
                .get(&Kind::IPPool.key(&format!("split-p-{i}")))
                .await
                .unwrap()
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
            assert_eq!(v["spec"]["cidr"], *cidr);
            assert_eq!(v["spec"]["vxlanMode"], "Always");
            assert_eq!(v["spec"]["natOutgoing"], true);
            assert_eq!(v["spec"]["futureField"]["x"], 1, "{v}");
            assert_eq!(v["metadata"]["labels"]["zone"], "a");
            assert!(v["metadata"].get("generation").is_none(), "{v}");
            assert_ne!(v["metadata"]["uid"], "u1");
        }
    }
}
