//! Typed access to Calico resources on a [`Store`]: what `calyx get|create|apply|replace|delete|
//! patch|label` and the node daemon use.
//!
//! Writes of several documents are checked as a whole (validation, pool overlaps, immutable
//! fields, existence) before anything is written, and then written in one transaction guarded
//! by the revisions that were read, so that a bad document or a concurrent writer leaves the
//! store exactly as it was.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde_json::Value;

use crate::resources::{
    check_pool_overlaps, ClusterInformation, Kind, Resource, ValidationError,
    CLUSTER_INFORMATION_KEY, CLUSTER_INFORMATION_PREFIX,
};
use crate::store::{Operation, Precondition, Revision, Store, StoreError, Transaction};

/// How many writes go into one etcd transaction (etcd's default `--max-txn-ops` is 128).
const MAX_TXN_OPS: usize = 128;

/// How often a read-modify-write (patch, label) is retried when another writer got there first.
const MAX_RMW_ATTEMPTS: usize = 10;

/// Fields of a resource that cannot change once it exists, as JSON pointers.
fn immutable_fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::IPPool => &["/spec/cidr", "/spec/blockSize"],
        _ => &[],
    }
}

/// Errors of typed resource operations. Those about one document of a batch carry its index
/// (1-based, as users count documents in a file).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The resource is invalid.
    #[error("{}", describe_invalid(*document, error))]
    Invalid {
        /// The document's position in the batch (1-based), if it came from one.
        document: Option<usize>,
        /// What is wrong with it.
        error: ValidationError,
    },
    /// `create` of a resource that exists.
    #[error("{}{kind} {name:?} already exists", doc_prefix(*document))]
    AlreadyExists {
        /// The document's position in the batch (1-based), if it came from one.
        document: Option<usize>,
        /// Its kind.
        kind: Kind,
        /// Its name.
        name: String,
    },
    /// `replace`, `delete`, `patch` or `get` of a resource that does not exist.
    #[error("{}{kind} {name:?} does not exist", doc_prefix(*document))]
    NotFound {
        /// The document's position in the batch (1-based), if it came from one.
        document: Option<usize>,
        /// Its kind.
        kind: Kind,
        /// Its name.
        name: String,
    },
    /// An attempt to change a field that is fixed once the resource exists.
    #[error(
        "{}{kind} {name:?}: {field}: cannot change from {old} to {new} (the field is immutable; \
         delete and re-create the resource instead)",
        doc_prefix(*document)
    )]
    Immutable {
        /// The document's position in the batch (1-based), if it came from one.
        document: Option<usize>,
        /// Its kind.
        kind: Kind,
        /// Its name.
        name: String,
        /// The field, e.g. `spec.cidr`.
        field: String,
        /// The stored value.
        old: String,
        /// The requested value.
        new: String,
    },
    /// The resource changed between read and write (its `resourceVersion` is stale).
    #[error("{kind} {name:?} was modified by someone else; read it again and retry")]
    Conflict {
        /// Its kind.
        kind: Kind,
        /// Its name.
        name: String,
    },
    /// A stored value could not be decoded.
    #[error("stored value at {key} is not a valid resource: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// A patch document is not a JSON object.
    #[error("patch: {0}")]
    BadPatch(String),
    /// A label key or value that Kubernetes' rules refuse.
    #[error("label {0}")]
    InvalidLabel(String),
    /// A WorkloadEndpoint that does not exist.
    #[error("WorkloadEndpoint {name:?} does not exist in namespace {namespace:?}")]
    WepNotFound {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A WorkloadEndpoint kept changing under a read-modify-write.
    #[error("WorkloadEndpoint {namespace}/{name} was modified by someone else; retry")]
    WepConflict {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `document 2 (IPPool "a"): spec.cidr: ...` inside a batch, the plain error outside one: the
/// same shape as the parse errors of [`crate::resources::parse_documents`].
fn describe_invalid(document: Option<usize>, error: &ValidationError) -> String {
    match document {
        Some(i) => format!(
            "document {i} ({} {:?}): {}",
            error.kind,
            error.name,
            error.detail()
        ),
        None => error.to_string(),
    }
}

fn doc_prefix(document: Option<usize>) -> String {
    document.map_or_else(String::new, |i| format!("document {i}: "))
}

/// What a batch write does with each document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Every resource must be new.
    Create,
    /// Every resource must exist; it is overwritten.
    Replace,
    /// Created when new, overwritten when it exists.
    Apply,
}

/// What happened to one resource of a batch write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// It was created.
    Created,
    /// It existed and was overwritten.
    Replaced,
}

/// Typed resource operations over any [`Store`].
#[derive(Clone, Debug)]
pub struct ResourceClient<S> {
    store: S,
}

/// A stored resource with the revision it was read at.
struct Stored {
    resource: Resource,
    revision: Revision,
}

impl<S: Store> ResourceClient<S> {
    /// A client over `store`.
    pub fn new(store: S) -> Self {
        ResourceClient { store }
    }

    /// The store underneath.
    pub fn store(&self) -> &S {
        &self.store
    }

    async fn read(&self, kind: Kind, name: &str) -> Result<Option<Stored>, ClientError> {
        let key = kind.key(name);
        match self.store.get(&key).await? {
            None => Ok(None),
            Some(kv) => Ok(Some(Stored {
                resource: decode(kind, &kv.key, &kv.value, kv.mod_revision)?,
                revision: kv.mod_revision,
            })),
        }
    }

    /// One resource, with `metadata.resourceVersion` set; `None` when absent.
    pub async fn get(&self, kind: Kind, name: &str) -> Result<Option<Resource>, ClientError> {
        Ok(self.read(kind, name).await?.map(|s| s.resource))
    }

    /// `clusterinformations/default`, with its revision; `None` when no component has written
    /// it yet.
    pub async fn cluster_information(&self) -> Result<Option<ClusterInformation>, ClientError> {
        let Some(kv) = self.store.get(CLUSTER_INFORMATION_KEY).await? else {
            return Ok(None);
        };
        let mut ci =
            ClusterInformation::from_json(&kv.value).map_err(|e| ClientError::Corrupt {
                key: kv.key.clone(),
                reason: e.to_string(),
            })?;
        ci.revision = Some(kv.mod_revision);
        Ok(Some(ci))
    }

    /// Every ClusterInformation (Calico keeps only `default`), ordered by name.
    pub async fn list_cluster_information(&self) -> Result<Vec<ClusterInformation>, ClientError> {
        let listing = self.store.list(CLUSTER_INFORMATION_PREFIX).await?;
        listing
            .kvs
            .iter()
            .map(|kv| {
                let mut ci =
                    ClusterInformation::from_json(&kv.value).map_err(|e| ClientError::Corrupt {
                        key: kv.key.clone(),
                        reason: e.to_string(),
                    })?;
                ci.revision = Some(kv.mod_revision);
                Ok(ci)
            })
            .collect()
    }

    /// Writes `clusterinformations/default`: created (with a `uid` and `creationTimestamp`)
    /// when `ci.revision` is `None`, else updated only if still at that revision. A concurrent
    /// writer is [`StoreError::AlreadyExists`] or [`StoreError::Conflict`] inside
    /// [`ClientError::Store`]: read again and retry. Returns the revision written.
    pub async fn write_cluster_information(
        &self,
        ci: &ClusterInformation,
    ) -> Result<Revision, ClientError> {
        let key = format!("{CLUSTER_INFORMATION_PREFIX}{}", ci.name);
        let written = match ci.revision {
            None => {
                let mut fresh = ci.clone();
                fresh.set_metadata_if_absent("uid", new_uid());
                fresh.set_metadata_if_absent("creationTimestamp", rfc3339_now());
                self.store.create(&key, fresh.to_json()).await?
            }
            Some(rev) => self.store.update(&key, ci.to_json(), rev).await?,
        };
        Ok(written)
    }

    /// Every resource of a kind, ordered by name.
    pub async fn list(&self, kind: Kind) -> Result<Vec<Resource>, ClientError> {
        let listing = self.store.list(kind.key_prefix()).await?;
        listing
            .kvs
            .iter()
            .map(|kv| decode(kind, &kv.key, &kv.value, kv.mod_revision))
            .collect()
    }

    /// Checks a batch as [`ResourceClient::write_all`] would, without writing anything.
    pub async fn check_all(
        &self,
        mode: WriteMode,
        resources: &[Resource],
    ) -> Result<(), ClientError> {
        self.plan(mode, resources).await.map(|_| ())
    }

    /// Creates, replaces or applies every resource, all or nothing: the whole batch is
    /// checked first (validation, pool overlaps with each other and with stored pools,
    /// immutable fields, existence), then written in one transaction guarded by the revisions
    /// read (batches above 128 documents go in several transactions).
    pub async fn write_all(
        &self,
        mode: WriteMode,
        resources: Vec<Resource>,
    ) -> Result<Vec<WriteOutcome>, ClientError> {
        let plan = self.plan(mode, &resources).await?;
        let now = rfc3339_now();
        let mut outcomes = Vec::with_capacity(resources.len());
        let mut steps: Vec<(Precondition, Operation)> = Vec::with_capacity(resources.len());
        for (mut resource, existing) in resources.into_iter().zip(plan) {
            let key = resource.key();
            let meta = resource.metadata_mut();
            meta.resource_version = None;
            let guard = match &existing {
                Some(old) => {
                    // Identity and creation time belong to the stored object.
                    let old_meta = old.resource.metadata();
                    meta.uid = old_meta.uid.clone();
                    meta.creation_timestamp = old_meta.creation_timestamp.clone();
                    outcomes.push(WriteOutcome::Replaced);
                    Precondition::ModRevision(key.clone(), old.revision)
                }
                None => {
                    meta.uid = meta.uid.take().or_else(|| Some(new_uid()));
                    meta.creation_timestamp =
                        meta.creation_timestamp.take().or_else(|| Some(now.clone()));
                    outcomes.push(WriteOutcome::Created);
                    Precondition::Absent(key.clone())
                }
            };
            steps.push((guard, Operation::put(key, resource.to_json())));
        }
        for chunk in steps.chunks(MAX_TXN_OPS) {
            let mut txn = Transaction::new();
            for (guard, op) in chunk {
                txn = txn.when(guard.clone()).then(op.clone());
            }
            match self.store.transaction(txn).await {
                Ok(_) => {}
                Err(StoreError::TransactionFailed) => {
                    // Someone wrote one of these keys between our check and our write.
                    let (guard, _) = &chunk[0];
                    let (kind, name) = Kind::from_key(guard.key())
                        .map(|(k, n)| (k, n.to_string()))
                        .unwrap_or((Kind::IPPool, guard.key().to_string()));
                    return Err(ClientError::Conflict { kind, name });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(outcomes)
    }

    /// Checks the batch and returns, for each resource, what is stored under its name now.
    async fn plan(
        &self,
        mode: WriteMode,
        resources: &[Resource],
    ) -> Result<Vec<Option<Stored>>, ClientError> {
        for (i, r) in resources.iter().enumerate() {
            r.validate().map_err(|error| ClientError::Invalid {
                document: Some(i + 1),
                error,
            })?;
        }
        let mut existing = Vec::with_capacity(resources.len());
        for (i, r) in resources.iter().enumerate() {
            let document = Some(i + 1);
            let stored = self.read(r.kind(), r.name()).await?;
            match (mode, &stored) {
                (WriteMode::Create, Some(_)) => {
                    return Err(ClientError::AlreadyExists {
                        document,
                        kind: r.kind(),
                        name: r.name().to_string(),
                    })
                }
                (WriteMode::Replace, None) => {
                    return Err(ClientError::NotFound {
                        document,
                        kind: r.kind(),
                        name: r.name().to_string(),
                    })
                }
                _ => {}
            }
            if let Some(old) = &stored {
                check_immutable(document, &old.resource, r)?;
                if let Some(version) = &r.metadata().resource_version {
                    if version != &old.revision.to_string() {
                        return Err(ClientError::Conflict {
                            kind: r.kind(),
                            name: r.name().to_string(),
                        });
                    }
                }
            }
            existing.push(stored);
        }
        self.check_overlaps(resources).await?;
        Ok(existing)
    }

    /// New and changed pools must not overlap each other nor the stored pools they do not
    /// replace.
    async fn check_overlaps(&self, resources: &[Resource]) -> Result<(), ClientError> {
        if !resources.iter().any(|r| r.kind() == Kind::IPPool) {
            return Ok(());
        }
        let stored = self.list(Kind::IPPool).await?;
        let incoming: BTreeMap<&str, &Resource> = resources
            .iter()
            .filter(|r| r.kind() == Kind::IPPool)
            .map(|r| (r.name(), r))
            .collect();
        let mut pools = Vec::new();
        for r in stored.iter().filter(|r| !incoming.contains_key(r.name())) {
            if let Resource::IPPool(p) = r {
                pools.push(p);
            }
        }
        for r in resources {
            if let Resource::IPPool(p) = r {
                pools.push(p);
            }
        }
        check_pool_overlaps(&pools).map_err(|error| {
            let document = resources
                .iter()
                .position(|r| r.kind() == error.kind && r.name() == error.name)
                .map(|i| i + 1);
            ClientError::Invalid { document, error }
        })
    }

    /// Deletes a resource (guarded by the revision read just before), returning what was
    /// stored.
    pub async fn delete(&self, kind: Kind, name: &str) -> Result<Resource, ClientError> {
        let stored = self
            .read(kind, name)
            .await?
            .ok_or_else(|| ClientError::NotFound {
                document: None,
                kind,
                name: name.to_string(),
            })?;
        match self
            .store
            .delete(&kind.key(name), Some(stored.revision))
            .await
        {
            Ok(_) => Ok(stored.resource),
            Err(StoreError::Conflict { .. }) => Err(ClientError::Conflict {
                kind,
                name: name.to_string(),
            }),
            Err(StoreError::NotFound { .. }) => Err(ClientError::NotFound {
                document: None,
                kind,
                name: name.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Applies a JSON merge patch (RFC 7396) to a stored resource, with every check of
    /// `replace`; retried when another writer got there first.
    pub async fn patch(
        &self,
        kind: Kind,
        name: &str,
        patch: &Value,
    ) -> Result<Resource, ClientError> {
        if !patch.is_object() {
            return Err(ClientError::BadPatch(
                "a merge patch must be a JSON object, like {\"spec\":{\"vxlanMode\":\"Always\"}}"
                    .into(),
            ));
        }
        // The patch is user input: a field that is not in Calico's API is a typo. What is
        // stored already (fields of a newer Calico included) is kept as it is.
        crate::resources::schema::check_fields(kind, patch, true).map_err(ClientError::BadPatch)?;
        self.modify(kind, name, None, |current| {
            let mut value: Value = serde_json::from_slice(&current.to_json())
                .map_err(|e| ClientError::BadPatch(e.to_string()))?;
            merge_patch(&mut value, patch);
            let bytes =
                serde_json::to_vec(&value).map_err(|e| ClientError::BadPatch(e.to_string()))?;
            Resource::from_json(kind, &bytes).map_err(|e| ClientError::BadPatch(e.to_string()))
        })
        .await
    }

    /// Sets (`Some(value)`) or removes (`None`) labels of a stored resource.
    pub async fn label(
        &self,
        kind: Kind,
        name: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<Resource, ClientError> {
        self.modify(kind, name, None, |current| {
            let mut next = current.clone();
            let labels = &mut next.metadata_mut().labels;
            for (key, value) in changes {
                match value {
                    Some(v) => {
                        labels.insert(key.clone(), v.clone());
                    }
                    None => {
                        labels.remove(key);
                    }
                }
            }
            Ok(next)
        })
        .await
    }

    /// Read-modify-write of one resource, guarded by the revision read and retried when
    /// another writer got there first. `change` gets the stored resource — or `missing`, when
    /// given and nothing is stored (the result is then created) — and returns the new one,
    /// which gets every check of `replace`. An unchanged result writes nothing.
    pub async fn modify(
        &self,
        kind: Kind,
        name: &str,
        missing: Option<&Resource>,
        change: impl Fn(&Resource) -> Result<Resource, ClientError>,
    ) -> Result<Resource, ClientError> {
        for _ in 0..MAX_RMW_ATTEMPTS {
            let stored = self.read(kind, name).await?;
            let current = match (&stored, missing) {
                (Some(s), _) => &s.resource,
                (None, Some(base)) => base,
                (None, None) => {
                    return Err(ClientError::NotFound {
                        document: None,
                        kind,
                        name: name.to_string(),
                    })
                }
            };
            let mut next = change(current)?;
            if next.name() != name || next.kind() != kind {
                return Err(ClientError::BadPatch(
                    "a patch cannot change the kind or the name".into(),
                ));
            }
            if stored.as_ref().is_some_and(|s| s.resource == next) {
                return Ok(next);
            }
            next.validate().map_err(|error| ClientError::Invalid {
                document: None,
                error,
            })?;
            if let Some(s) = &stored {
                check_immutable(None, &s.resource, &next)?;
            }
            if kind == Kind::IPPool {
                self.check_overlaps(std::slice::from_ref(&next)).await?;
            }
            let meta = next.metadata_mut();
            meta.resource_version = None;
            let key = kind.key(name);
            let written = match &stored {
                Some(s) => {
                    meta.uid = s.resource.metadata().uid.clone();
                    meta.creation_timestamp = s.resource.metadata().creation_timestamp.clone();
                    self.store.update(&key, next.to_json(), s.revision).await
                }
                None => {
                    meta.uid = Some(new_uid());
                    meta.creation_timestamp = Some(rfc3339_now());
                    self.store.create(&key, next.to_json()).await
                }
            };
            match written {
                Ok(revision) => {
                    next.metadata_mut().resource_version = Some(revision.to_string());
                    return Ok(next);
                }
                Err(StoreError::Conflict { .. } | StoreError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ClientError::Conflict {
            kind,
            name: name.to_string(),
        })
    }
}

fn decode(
    kind: Kind,
    key: &str,
    value: &[u8],
    revision: Revision,
) -> Result<Resource, ClientError> {
    let mut resource = Resource::from_json(kind, value).map_err(|e| ClientError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })?;
    resource.metadata_mut().resource_version = Some(revision.to_string());
    Ok(resource)
}

/// Refuses a change of any immutable field of `old` in `new`.
fn check_immutable(
    document: Option<usize>,
    old: &Resource,
    new: &Resource,
) -> Result<(), ClientError> {
    let fields = immutable_fields(old.kind());
    if fields.is_empty() {
        return Ok(());
    }
    let as_json = |r: &Resource| serde_json::from_slice::<Value>(&r.to_json()).ok();
    let (Some(old_json), Some(new_json)) = (as_json(old), as_json(new)) else {
        return Ok(());
    };
    for pointer in fields {
        let before = old_json.pointer(pointer);
        let after = new_json.pointer(pointer);
        if before != after {
            let show =
                |v: Option<&Value>| v.map_or_else(|| "(unset)".to_string(), Value::to_string);
            return Err(ClientError::Immutable {
                document,
                kind: old.kind(),
                name: old.name().to_string(),
                field: pointer.trim_start_matches('/').replace('/', "."),
                old: show(before),
                new: show(after),
            });
        }
    }
    Ok(())
}

/// RFC 7396 JSON merge patch: objects merge recursively, `null` removes, anything else
/// replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(target_map) = target {
        for (key, value) in patch_map {
            if value.is_null() {
                target_map.remove(key);
            } else {
                merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// A random (version 4) UUID, as Kubernetes assigns to every object.
pub(crate) fn new_uid() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Now as RFC 3339 in UTC with second precision (`2026-11-22T10:00:00Z`).
pub(crate) fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Formats seconds since the Unix epoch as RFC 3339 UTC (civil-from-days conversion).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_305_600), "2026-11-22T00:00:00Z");
    }

    #[test]
    fn merge_patch_follows_rfc7396() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"a": [1]});
        merge_patch(&mut doc, &json!({"a": [2, 3], "n": {"x": 1}}));
        assert_eq!(doc, json!({"a": [2, 3], "n": {"x": 1}}));
    }

    #[tokio::test]
    async fn cluster_information_create_update_and_conflict() {
        let client = ResourceClient::new(crate::store::memory::MemoryStore::new());
        assert!(client.cluster_information().await.unwrap().is_none());
        let ci = ClusterInformation::created("v0.1.0", "", "g".into());
        let rev = client.write_cluster_information(&ci).await.unwrap();
        // A second create loses.
        let again = client.write_cluster_information(&ci).await.unwrap_err();
        assert!(
            matches!(again, ClientError::Store(StoreError::AlreadyExists { .. })),
            "{again}"
        );
        let mut read = client.cluster_information().await.unwrap().unwrap();
        assert_eq!(read.revision, Some(rev));
        assert_eq!(read.spec.cluster_guid, "g");
        let stored: Value = serde_json::from_slice(
            &client
                .store()
                .get(CLUSTER_INFORMATION_KEY)
                .await
                .unwrap()
                .unwrap()
                .value,
        )
        .unwrap();
        assert_eq!(stored["metadata"]["uid"].as_str().map(str::len), Some(36));
        assert!(stored["metadata"]["creationTimestamp"].is_string());
        read.spec.datastore_ready = Some(false);
        let stale = read.clone();
        client.write_cluster_information(&read).await.unwrap();
        let lost = client.write_cluster_information(&stale).await.unwrap_err();
        assert!(
            matches!(lost, ClientError::Store(StoreError::Conflict { .. })),
            "{lost}"
        );
        let all = client.list_cluster_information().await.unwrap();
        assert_eq!(all.len(), 1);
        assert!(!all[0].datastore_ready());
    }

    #[test]
    fn uids_are_version_4() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert_ne!(uid, new_uid());
    }
}
