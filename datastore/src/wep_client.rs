//! WorkloadEndpoint operations on the [`ResourceClient`]: what `calyx-cni` (write on ADD,
//! delete on DEL) and `calyx get/label workloadendpoints` use. WorkloadEndpoints are namespaced
//! and written by the CNI plugin, not by `calyx apply`, so they are not one of the
//! [`Kind`](crate::resources::Kind)s.

use std::collections::BTreeMap;

use crate::client::{new_uid, rfc3339_now, ClientError, ResourceClient};
use crate::resources::{
    check_label_key, check_label_value, WorkloadEndpoint, WORKLOAD_ENDPOINT_PREFIX,
};
use crate::store::{Revision, Store, StoreError};

/// How often a read-modify-write of an endpoint is retried when another writer got there first.
const ATTEMPTS: usize = 10;

/// What [`ResourceClient::delete_workload_endpoint`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WepDeleted {
    /// It was deleted.
    Deleted,
    /// There was none.
    Absent,
    /// It belongs to another container (a newer sandbox of the same pod) and was kept.
    OtherContainer,
}

impl<S: Store> ResourceClient<S> {
    async fn read_wep(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<(WorkloadEndpoint, Revision)>, ClientError> {
        let key = WorkloadEndpoint::key_of(namespace, name);
        let Some(kv) = self.store().get(&key).await? else {
            return Ok(None);
        };
        let mut w = decode_wep(&kv.key, &kv.value)?;
        w.metadata.resource_version = Some(kv.mod_revision.to_string());
        Ok(Some((w, kv.mod_revision)))
    }

    /// One endpoint, with `metadata.resourceVersion`; `None` when absent.
    pub async fn workload_endpoint(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<WorkloadEndpoint>, ClientError> {
        Ok(self.read_wep(namespace, name).await?.map(|(w, _)| w))
    }

    /// Every endpoint of `namespace` (all namespaces with `None`), ordered by namespace, name.
    pub async fn list_workload_endpoints(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<WorkloadEndpoint>, ClientError> {
        let prefix = match namespace {
            Some(ns) => format!("{WORKLOAD_ENDPOINT_PREFIX}{ns}/"),
            None => WORKLOAD_ENDPOINT_PREFIX.to_string(),
        };
        let listing = self.store().list(&prefix).await?;
        let mut out = Vec::with_capacity(listing.kvs.len());
        for kv in &listing.kvs {
            if WorkloadEndpoint::split_key(&kv.key).is_none() {
                continue;
            }
            let mut w = decode_wep(&kv.key, &kv.value)?;
            w.metadata.resource_version = Some(kv.mod_revision.to_string());
            out.push(w);
        }
        Ok(out)
    }

    /// Creates `wep`, or updates the stored endpoint of that name: the modelled spec fields
    /// become `wep`'s and its labels are set on top of the stored ones, while its identity (`uid`, `creationTimestamp`) and every field
    /// Calyx does not model (`ports`, annotations, ...) stay. Guarded by the revision read and
    /// retried on conflict. Returns the revision written.
    pub async fn put_workload_endpoint(
        &self,
        wep: &WorkloadEndpoint,
    ) -> Result<Revision, ClientError> {
        let (ns, name) = (&wep.metadata.namespace, &wep.metadata.name);
        let key = wep.key();
        for _ in 0..ATTEMPTS {
            let written = match self.read_wep(ns, name).await? {
                Some((mut stored, revision)) => {
                    // Labels others set (calico-kube-controllers copies the pod's labels
                    // in) stay; ours are set on top.
                    stored.metadata.labels.extend(
                        wep.metadata
                            .labels
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone())),
                    );
                    let extra = std::mem::take(&mut stored.spec.extra);
                    stored.spec = wep.spec.clone();
                    for (k, v) in extra {
                        stored.spec.extra.entry(k).or_insert(v);
                    }
                    self.store().update(&key, stored.to_json(), revision).await
                }
                None => {
                    let mut fresh = wep.clone();
                    fresh.metadata.uid = fresh.metadata.uid.or_else(|| Some(new_uid()));
                    fresh.metadata.creation_timestamp = fresh
                        .metadata
                        .creation_timestamp
                        .or_else(|| Some(rfc3339_now()));
                    self.store().create(&key, fresh.to_json()).await
                }
            };
            match written {
                Ok(revision) => return Ok(revision),
                Err(StoreError::Conflict { .. } | StoreError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ClientError::WepConflict {
            namespace: ns.clone(),
            name: name.clone(),
        })
    }

    /// Deletes the endpoint unless it records another container than `container_id` (as
    /// Calico's plugin does: a DEL for an old sandbox must not remove the record of the pod's
    /// current one). An endpoint without a container ID is deleted.
    pub async fn delete_workload_endpoint(
        &self,
        namespace: &str,
        name: &str,
        container_id: &str,
    ) -> Result<WepDeleted, ClientError> {
        let key = WorkloadEndpoint::key_of(namespace, name);
        for _ in 0..ATTEMPTS {
            let Some((stored, revision)) = self.read_wep(namespace, name).await? else {
                return Ok(WepDeleted::Absent);
            };
            if !stored.spec.container_id.is_empty() && stored.spec.container_id != container_id {
                return Ok(WepDeleted::OtherContainer);
            }
            match self.store().delete(&key, Some(revision)).await {
                Ok(_) => return Ok(WepDeleted::Deleted),
                Err(StoreError::NotFound { .. }) => return Ok(WepDeleted::Absent),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ClientError::WepConflict {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// Sets (`Some`) or removes (`None`) labels of a stored endpoint, keeping everything else
    /// as stored; guarded by the revision read and retried on conflict.
    pub async fn label_workload_endpoint(
        &self,
        namespace: &str,
        name: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<WorkloadEndpoint, ClientError> {
        for (k, v) in changes {
            check_label_key(k).map_err(|r| ClientError::InvalidLabel(format!("{k:?} {r}")))?;
            if let Some(v) = v {
                check_label_value(v)
                    .map_err(|r| ClientError::InvalidLabel(format!("{k}={v:?}: {r}")))?;
            }
        }
        let key = WorkloadEndpoint::key_of(namespace, name);
        for _ in 0..ATTEMPTS {
            let Some((mut w, revision)) = self.read_wep(namespace, name).await? else {
                return Err(ClientError::WepNotFound {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                });
            };
            let before = w.metadata.labels.clone();
            for (k, v) in changes {
                match v {
                    Some(v) => w.metadata.labels.insert(k.clone(), v.clone()),
                    None => w.metadata.labels.remove(k),
                };
            }
            if w.metadata.labels == before {
                return Ok(w);
            }
            match self.store().update(&key, w.to_json(), revision).await {
                Ok(rev) => {
                    w.metadata.resource_version = Some(rev.to_string());
                    return Ok(w);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ClientError::WepConflict {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

fn decode_wep(key: &str, value: &[u8]) -> Result<WorkloadEndpoint, ClientError> {
    WorkloadEndpoint::from_json(value).map_err(|e| ClientError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{ObjectMeta, WorkloadEndpointSpec};
    use crate::store::memory::MemoryStore;

    fn wep(container: &str) -> WorkloadEndpoint {
        let mut metadata = ObjectMeta::named("n1-k8s-web-eth0");
        metadata.namespace = "default".into();
        metadata.labels.insert("a".into(), "1".into());
        WorkloadEndpoint {
            metadata,
            spec: WorkloadEndpointSpec {
                orchestrator: "k8s".into(),
                node: "n1".into(),
                pod: "web".into(),
                endpoint: "eth0".into(),
                container_id: container.into(),
                ..WorkloadEndpointSpec::default()
            },
            extra: serde_json::Map::new(),
        }
    }

    #[tokio::test]
    async fn put_label_and_delete_by_container() {
        let client = ResourceClient::new(MemoryStore::new());
        client.put_workload_endpoint(&wep("c1")).await.unwrap();
        // Someone else (a newer Calico) adds a field; a re-ADD keeps it.
        let key = wep("c1").key();
        let kv = client.store().get(&key).await.unwrap().unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
        v["spec"]["ports"] = serde_json::json!([{"name": "http", "port": 80}]);
        client
            .store()
            .update(&key, serde_json::to_vec(&v).unwrap(), kv.mod_revision)
            .await
            .unwrap();
        client.put_workload_endpoint(&wep("c2")).await.unwrap();
        let w = client
            .workload_endpoint("default", "n1-k8s-web-eth0")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.spec.container_id, "c2");
        assert!(w.spec.extra.contains_key("ports"));
        assert!(w.metadata.uid.is_some());
        let changes = BTreeMap::from([("b".to_string(), Some("2".to_string()))]);
        let w = client
            .label_workload_endpoint("default", "n1-k8s-web-eth0", &changes)
            .await
            .unwrap();
        assert_eq!(w.metadata.labels["b"], "2");
        assert!(w.spec.extra.contains_key("ports"));
        let bad = BTreeMap::from([("b".to_string(), Some("-x".to_string()))]);
        assert!(matches!(
            client
                .label_workload_endpoint("default", "n1-k8s-web-eth0", &bad)
                .await,
            Err(ClientError::InvalidLabel(_))
        ));
        assert_eq!(client.list_workload_endpoints(None).await.unwrap().len(), 1);
        assert!(client
            .list_workload_endpoints(Some("other"))
            .await
            .unwrap()
            .is_empty());
        // A DEL for the old sandbox keeps it; the current one deletes it.
        let del = |c: &'static str| {
            let client = client.clone();
            async move {
                client
                    .delete_workload_endpoint("default", "n1-k8s-web-eth0", c)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(del("c1").await, WepDeleted::OtherContainer);
        assert_eq!(del("c2").await, WepDeleted::Deleted);
        assert_eq!(del("c2").await, WepDeleted::Absent);
    }
}
