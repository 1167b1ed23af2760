//! `WorkloadEndpoint`: the record of one pod interface that Calico's CNI plugin writes in etcd
//! mode, and that calico-kube-controllers (pod label sync, clean-up after deleted nodes) and
//! `calicoctl get workloadendpoints` read.
//!
//! Key: `/calico/resources/v3/projectcalico.org/workloadendpoints/<namespace>/<name>`. Name:
//! `<node>-k8s-<pod>-<endpoint>` for Kubernetes pods, `<node>-cni-<containerID>-<endpoint>`
//! otherwise, each part with its dashes doubled (libcalico-go `names.WorkloadEndpointIdentifiers`).
//! Decoding keeps every field Calyx does not model (`ports`, `ipNATs`, `qosControls`, ...), so a
//! label change written back by Calyx loses nothing.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::object::{deserialize_object, serialize_object};
use super::types::de_helpers::null_default;
use super::ObjectMeta;

/// The kind name, as in `kind:`.
pub const WORKLOAD_ENDPOINT_KIND: &str = "WorkloadEndpoint";

/// The etcd key prefix of WorkloadEndpoints, with a trailing slash (then `<namespace>/<name>`).
pub const WORKLOAD_ENDPOINT_PREFIX: &str =
    "/calico/resources/v3/projectcalico.org/workloadendpoints/";

/// The label holding the endpoint's namespace (libcalico-go adds it on every write).
pub const LABEL_NAMESPACE: &str = "projectcalico.org/namespace";
/// The label holding the endpoint's orchestrator (`k8s`, `cni`).
pub const LABEL_ORCHESTRATOR: &str = "projectcalico.org/orchestrator";
/// The label holding the pod's service account, when known.
pub const LABEL_SERVICE_ACCOUNT: &str = "projectcalico.org/serviceaccount";

/// A workload endpoint (`kind: WorkloadEndpoint`, namespaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadEndpoint {
    /// Name, namespace, labels, revision.
    pub metadata: ObjectMeta,
    /// The endpoint.
    pub spec: WorkloadEndpointSpec,
    /// Top-level fields Calyx does not model, kept as read.
    pub extra: Map<String, Value>,
}

/// The `spec` of a [`WorkloadEndpoint`], with Calico's field names. Empty strings and lists
/// are omitted on output, as Calico's `omitempty`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEndpointSpec {
    /// `k8s` for Kubernetes pods, `cni` for other CNI runtimes.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub orchestrator: String,
    /// The workload's name for orchestrators other than `k8s`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub workload: String,
    /// The node the endpoint is on.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub node: String,
    /// The container (sandbox) ID of the CNI ADD that made it.
    #[serde(
        default,
        rename = "containerID",
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
    /// The pod's name (`k8s`).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub pod: String,
    /// The interface in the pod (`eth0`).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub endpoint: String,
    /// The pod's service account, when known.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub service_account_name: String,
    /// The endpoint's addresses, `10.244.1.5/32` (`/128` for IPv6).
    #[serde(
        default,
        rename = "ipNetworks",
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_networks: Vec<String>,
    /// Policy profiles (`kns.<namespace>`, `ksa.<namespace>.<serviceaccount>`).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub profiles: Vec<String>,
    /// The host end of the veth (`cali…`).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub interface_name: String,
    /// The MAC address of the pod end.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub mac: String,
    /// Every other field (`ports`, `ipNATs`, `ipv4Gateway`, `qosControls`, ...), kept as read.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A stored value could not be taken as a WorkloadEndpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode WorkloadEndpoint: {0}")]
pub struct WepDecodeError(pub String);

/// A part of a WorkloadEndpoint name that Calico's naming rule cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("WorkloadEndpoint name: {field} {value:?} {reason}")]
pub struct WepNameError {
    /// `node`, `pod`, `containerID`, `endpoint`.
    pub field: &'static str,
    /// Its value.
    pub value: String,
    /// Why it cannot be used.
    pub reason: &'static str,
}

/// Calico's WorkloadEndpoint name (`names.CalculateWorkloadEndpointName`): the parts joined
/// with `-`, each part's own dashes doubled: `node-1`, `k8s`, `web-0`, `eth0` ->
/// `node--1-k8s-web--0-eth0`. `parts` are (field name, value) in order.
pub fn workload_endpoint_name(parts: &[(&'static str, &str)]) -> Result<String, WepNameError> {
    let mut out = Vec::with_capacity(parts.len());
    for (field, value) in parts {
        let err = |reason| WepNameError {
            field,
            value: (*value).to_string(),
            reason,
        };
        if value.is_empty() {
            return Err(err("is empty"));
        }
        if value.starts_with('-') {
            return Err(err("must not begin with a '-'"));
        }
        if value.ends_with('-') {
            return Err(err("must not end with a '-'"));
        }
        out.push(value.replace('-', "--"));
    }
    Ok(out.join("-"))
}

impl WorkloadEndpoint {
    /// The etcd key of `namespace`/`name`.
    pub fn key_of(namespace: &str, name: &str) -> String {
        format!("{WORKLOAD_ENDPOINT_PREFIX}{namespace}/{name}")
    }

    /// This endpoint's etcd key.
    pub fn key(&self) -> String {
        Self::key_of(&self.metadata.namespace, &self.metadata.name)
    }

    /// Splits a key into (namespace, name).
    pub fn split_key(key: &str) -> Option<(&str, &str)> {
        let rest = key.strip_prefix(WORKLOAD_ENDPOINT_PREFIX)?;
        let (ns, name) = rest.split_once('/')?;
        (!ns.is_empty() && !name.is_empty() && !name.contains('/')).then_some((ns, name))
    }

    /// Decodes a stored value leniently (fields Calyx does not model are kept).
    pub fn from_json(bytes: &[u8]) -> Result<Self, WepDecodeError> {
        serde_json::from_slice(bytes).map_err(|e| WepDecodeError(e.to_string()))
    }

    /// The value to store: compact JSON without `resourceVersion`.
    pub fn to_json(&self) -> Vec<u8> {
        let mut w = self.clone();
        w.metadata.resource_version = None;
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_vec(&w).unwrap_or_default()
    }
}

impl Serialize for WorkloadEndpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_object::<_, _, Value>(
            s,
            WORKLOAD_ENDPOINT_KIND,
            &self.metadata,
            &self.spec,
            None,
            &self.extra,
        )
    }
}

impl<'de> Deserialize<'de> for WorkloadEndpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let e = deserialize_object::<_, WorkloadEndpointSpec, Value>(d, WORKLOAD_ENDPOINT_KIND)?;
        let mut extra = e.extra;
        if let Some(status) = e.status {
            extra.insert("status".into(), status);
        }
        Ok(WorkloadEndpoint {
            metadata: e.metadata,
            spec: e.spec,
            extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_calico_makes_them() {
        assert_eq!(
            workload_endpoint_name(&[
                ("node", "node-1"),
                ("orchestrator", "k8s"),
                ("pod", "web-0"),
                ("endpoint", "eth0")
            ])
            .unwrap(),
            "node--1-k8s-web--0-eth0"
        );
        assert_eq!(
            workload_endpoint_name(&[
                ("node", "n1"),
                ("orchestrator", "cni"),
                ("containerID", "abc123"),
                ("endpoint", "eth0")
            ])
            .unwrap(),
            "n1-cni-abc123-eth0"
        );
        let e = workload_endpoint_name(&[("pod", "web-")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "WorkloadEndpoint name: pod \"web-\" must not end with a '-'"
        );
        assert!(workload_endpoint_name(&[("node", "")]).is_err());
    }

    #[test]
    fn calico_written_endpoint_round_trips() {
        // As Calico 3.31's CNI plugin stores one (with fields Calyx does not model).
        let stored = r#"{"kind":"WorkloadEndpoint","apiVersion":"projectcalico.org/v3","metadata":{"name":"node1-k8s-web--0-eth0","generateName":"web-","namespace":"default","uid":"0b7c","creationTimestamp":"2026-01-01T00:00:00Z","labels":{"app":"web","projectcalico.org/namespace":"default","projectcalico.org/orchestrator":"k8s","projectcalico.org/serviceaccount":"default"}},"spec":{"orchestrator":"k8s","node":"node1","containerID":"c0ffee","pod":"web-0","endpoint":"eth0","serviceAccountName":"default","ipNetworks":["10.244.1.5/32"],"profiles":["kns.default","ksa.default.default"],"interfaceName":"cali1234567890a","mac":"aa:bb:cc:dd:ee:ff","ports":[{"name":"http","protocol":"TCP","port":80,"hostPort":0,"hostIP":""}]}}"#;
        let w = WorkloadEndpoint::from_json(stored.as_bytes()).unwrap();
        assert_eq!(w.metadata.namespace, "default");
        assert_eq!(w.spec.container_id, "c0ffee");
        assert_eq!(w.spec.ip_networks, ["10.244.1.5/32"]);
        assert!(w.spec.extra.contains_key("ports"));
        assert!(w.metadata.extra.contains_key("generateName"));
        assert_eq!(
            w.key(),
            "/calico/resources/v3/projectcalico.org/workloadendpoints/default/node1-k8s-web--0-eth0"
        );
        assert_eq!(
            WorkloadEndpoint::split_key(&w.key()),
            Some(("default", "node1-k8s-web--0-eth0"))
        );
        let back: Value = serde_json::from_slice(&w.to_json()).unwrap();
        let original: Value = serde_json::from_str(stored).unwrap();
        assert_eq!(back, original);
        assert!(WorkloadEndpoint::from_json(br#"{"kind":"Node"}"#).is_err());
    }
}
