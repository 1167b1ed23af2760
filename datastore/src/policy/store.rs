//! Reading and writing the policy kinds in the store: all of a batch in one transaction
//! guarded by the revisions read, as `calyx apply` writes the other kinds.

use serde_json::Value;

use super::{PolicyKind, PolicyObject};
use crate::client::{new_uid, rfc3339_now, WriteMode};
use crate::store::{Operation, Precondition, Store, StoreError, Transaction};

/// Why a policy write or read failed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyStoreError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `create` found the object; `replace` or `delete` did not.
    #[error("{kind} {name:?} {what}")]
    Existence {
        /// Kind.
        kind: PolicyKind,
        /// `namespace/name` or `name`.
        name: String,
        /// `already exists` / `does not exist`.
        what: &'static str,
    },
    /// A policy names a tier that neither exists nor is in the batch (Calico refuses it too).
    #[error("{kind} {name:?}: spec.tier: tier {tier:?} does not exist (apply the Tier first, or in the same file)")]
    MissingTier {
        /// The policy's kind.
        kind: PolicyKind,
        /// The policy.
        name: String,
        /// The tier it names.
        tier: String,
    },
    /// A Tier that policies still use cannot be deleted.
    #[error("tier {tier:?} still has {count} polic(ies), e.g. {example:?}: delete them first")]
    TierInUse {
        /// The tier.
        tier: String,
        /// How many policies use it.
        count: usize,
        /// One of them.
        example: String,
    },
    /// Another writer changed an object between the read and the write.
    #[error("a policy object was modified concurrently; nothing was written, try again")]
    Conflict,
}

/// Lists the objects of `kind` (of one namespace, for a namespaced kind and `Some`), with
/// `metadata.resourceVersion` set to the etcd revision. Undecodable values are skipped.
pub async fn list<S: Store>(
    store: &S,
    kind: PolicyKind,
    namespace: Option<&str>,
) -> Result<Vec<PolicyObject>, StoreError> {
    let prefix = match (kind.namespaced(), namespace) {
        (true, Some(ns)) => format!("{}{ns}/", kind.key_prefix()),
        _ => kind.key_prefix(),
    };
    let listing = store.list(&prefix).await?;
    let mut out = Vec::new();
    for kv in &listing.kvs {
        if PolicyKind::from_key(&kv.key).map(|k| k.0) != Some(kind) {
            continue;
        }
        if let Ok(mut o) = PolicyObject::from_stored(kind, &kv.value) {
            if let Some(Value::Object(m)) = o.value.get_mut("metadata") {
                m.insert(
                    "resourceVersion".into(),
                    Value::from(kv.mod_revision.to_string()),
                );
            }
            out.push(o);
        }
    }
    Ok(out)
}

/// A checked batch, ready to be written in one transaction ([`commit`]).
#[derive(Debug)]
pub struct Prepared {
    txn: Transaction,
    /// Per object, whether it will be created (else replaced).
    pub created: Vec<bool>,
}

/// Writes every object in one transaction; returns, per object, whether it was created.
/// `apply` keeps an existing object's `uid` and `creationTimestamp`; new objects get them.
pub async fn write_all<S: Store>(
    store: &S,
    mode: WriteMode,
    objects: Vec<PolicyObject>,
) -> Result<Vec<bool>, PolicyStoreError> {
    let p = prepare(store, mode, objects).await?;
    commit(store, p).await
}

/// Writes a prepared batch, guarded by the revisions read when it was prepared.
pub async fn commit<S: Store>(store: &S, p: Prepared) -> Result<Vec<bool>, PolicyStoreError> {
    if p.txn.operations.is_empty() {
        return Ok(p.created);
    }
    match store.transaction(p.txn).await {
        Ok(_) => Ok(p.created),
        Err(StoreError::TransactionFailed) => Err(PolicyStoreError::Conflict),
        Err(e) => Err(e.into()),
    }
}

/// Checks a batch against the store (tiers exist, `create`/`replace` find what they expect)
/// and builds its transaction; nothing is written.
pub async fn prepare<S: Store>(
    store: &S,
    mode: WriteMode,
    objects: Vec<PolicyObject>,
) -> Result<Prepared, PolicyStoreError> {
    let batch_tiers: Vec<String> = objects
        .iter()
        .filter(|o| o.kind == PolicyKind::Tier)
        .map(|o| o.name().to_string())
        .collect();
    let mut txn = Transaction::new();
    // The stored tiers the batch's policies name: each is guarded by its revision and written
    // back unchanged, which moves its revision. A tier deleted after this read fails the
    // batch; a tier delete that read the tier before this batch lands fails instead (it is
    // guarded by the revision it read), so no policy is ever left in a deleted tier.
    let mut guarded: Vec<String> = Vec::new();
    for o in &objects {
        let Some(tier) = o.tier().filter(|t| t != super::DEFAULT_TIER) else {
            continue;
        };
        if batch_tiers.contains(&tier) || guarded.contains(&tier) {
            continue;
        }
        let key = PolicyKind::Tier.key("", &tier);
        match store.get(&key).await? {
            Some(kv) => {
                txn = txn
                    .when(Precondition::ModRevision(key.clone(), kv.mod_revision))
                    .then(Operation::put(key, kv.value));
                guarded.push(tier);
            }
            None => {
                return Err(PolicyStoreError::MissingTier {
                    kind: o.kind,
                    name: o.display_name(),
                    tier,
                })
            }
        }
    }
    let mut created = Vec::new();
    for mut o in objects {
        let key = o.key();
        let existing = store.get(&key).await?;
        let meta_of = |v: &Value, k: &str| v.pointer(&format!("/metadata/{k}")).cloned();
        let set_meta = |o: &mut PolicyObject, k: &str, v: Value| {
            if let Some(Value::Object(m)) = o.value.get_mut("metadata") {
                m.entry(k.to_string()).or_insert(v);
            }
        };
        match (&existing, mode) {
            (Some(_), WriteMode::Create) => {
                return Err(PolicyStoreError::Existence {
                    kind: o.kind,
                    name: o.display_name(),
                    what: "already exists",
                })
            }
            (None, WriteMode::Replace) => {
                return Err(PolicyStoreError::Existence {
                    kind: o.kind,
                    name: o.display_name(),
                    what: "does not exist",
                })
            }
            (Some(kv), _) => {
                let old: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
                for k in ["uid", "creationTimestamp"] {
                    if let Some(v) = meta_of(&old, k) {
                        set_meta(&mut o, k, v);
                    }
                }
                txn = txn.when(Precondition::ModRevision(key.clone(), kv.mod_revision));
                created.push(false);
            }
            (None, _) => {
                set_meta(&mut o, "uid", Value::from(new_uid()));
                set_meta(&mut o, "creationTimestamp", Value::from(rfc3339_now()));
                txn = txn.when(Precondition::Absent(key.clone()));
                created.push(true);
            }
        }
        txn = txn.then(Operation::put(key, o.to_json()));
    }
    Ok(Prepared { txn, created })
}

/// Deletes one object; `Ok(false)` when it did not exist. A Tier is deleted only while no
/// policy names it (as Calico).
pub async fn delete<S: Store>(
    store: &S,
    kind: PolicyKind,
    namespace: &str,
    name: &str,
) -> Result<bool, PolicyStoreError> {
    if kind == PolicyKind::Tier {
        return delete_tier(store, name).await;
    }
    let key = kind.key(namespace, name);
    match store.delete(&key, None).await {
        Ok(_) => Ok(true),
        Err(StoreError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Deletes Tier `name` when no policy names it: the tier is read first and the delete is
/// guarded by that revision, which every policy write into the tier moves (see [`prepare`]),
/// so a policy written between the check and the delete makes the delete fail (`Conflict`)
/// rather than leave the policy in a deleted tier.
async fn delete_tier<S: Store>(store: &S, name: &str) -> Result<bool, PolicyStoreError> {
    let key = PolicyKind::Tier.key("", name);
    let Some(tier) = store.get(&key).await? else {
        return Ok(false);
    };
    let mut users = Vec::new();
    for k in [PolicyKind::NetworkPolicy, PolicyKind::GlobalNetworkPolicy] {
        users.extend(
            list(store, k, None)
                .await?
                .into_iter()
                .filter(|p| p.tier().as_deref() == Some(name))
                .map(|p| p.display_name()),
        );
    }
    if let Some(example) = users.first() {
        return Err(PolicyStoreError::TierInUse {
            tier: name.to_string(),
            count: users.len(),
            example: example.clone(),
        });
    }
    let txn = Transaction::new()
        .when(Precondition::ModRevision(key.clone(), tier.mod_revision))
        .then(Operation::delete(key));
    match store.transaction(txn).await {
        Ok(_) => Ok(true),
        Err(StoreError::TransactionFailed) => Err(PolicyStoreError::Conflict),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::memory::MemoryStore;
    use serde_json::json;

    fn tier() -> PolicyObject {
        PolicyObject::from_user(
            PolicyKind::Tier,
            json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier",
                   "metadata": {"name": "security"}, "spec": {"order": 100}}),
        )
        .unwrap()
    }

    fn policy(name: &str) -> PolicyObject {
        PolicyObject::from_user(
            PolicyKind::GlobalNetworkPolicy,
            json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                   "metadata": {"name": format!("security.{name}")},
                   "spec": {"tier": "security", "selector": "all()",
                            "ingress": [{"action": "Allow"}]}}),
        )
        .unwrap()
    }

    async fn with_tier() -> MemoryStore {
        let store = MemoryStore::new();
        let p = prepare(&store, WriteMode::Apply, vec![tier()])
            .await
            .unwrap();
        commit(&store, p).await.unwrap();
        store
    }

    #[tokio::test]
    async fn a_tier_deleted_after_a_policy_was_checked_fails_the_policy_write() {
        let store = with_tier().await;
        let p = prepare(&store, WriteMode::Apply, vec![policy("a")])
            .await
            .unwrap();
        assert!(delete(&store, PolicyKind::Tier, "", "security")
            .await
            .unwrap());
        assert!(matches!(
            commit(&store, p).await,
            Err(PolicyStoreError::Conflict)
        ));
        assert!(list(&store, PolicyKind::GlobalNetworkPolicy, None)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn a_policy_written_into_a_tier_moves_its_revision_and_keeps_its_value() {
        let store = with_tier().await;
        let key = PolicyKind::Tier.key("", "security");
        let before = store.get(&key).await.unwrap().unwrap();
        // Two writers into the tier at once: the second sees a conflict, nothing of it lands.
        let a = prepare(&store, WriteMode::Apply, vec![policy("a")])
            .await
            .unwrap();
        let b = prepare(&store, WriteMode::Apply, vec![policy("b")])
            .await
            .unwrap();
        commit(&store, a).await.unwrap();
        assert!(matches!(
            commit(&store, b).await,
            Err(PolicyStoreError::Conflict)
        ));
        let after = store.get(&key).await.unwrap().unwrap();
        assert_eq!(after.value, before.value);
        assert!(after.mod_revision > before.mod_revision);
        // A delete that read the tier before that write would be refused by its guard; one
        // that reads it now finds the policy.
        assert!(matches!(
            delete(&store, PolicyKind::Tier, "", "security").await,
            Err(PolicyStoreError::TierInUse { .. })
        ));
        let stale = Transaction::new()
            .when(Precondition::ModRevision(key.clone(), before.mod_revision))
            .then(Operation::delete(key));
        assert!(matches!(
            store.transaction(stale).await,
            Err(StoreError::TransactionFailed)
        ));
    }
}
