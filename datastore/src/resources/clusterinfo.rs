//! `ClusterInformation`: the cluster-wide facts calico-node records at start-up
//! (`clusterinformations/default`: `clusterGUID`, `clusterType`, `calicoVersion`,
//! `datastoreReady`, `variant`), which `calicoctl version` reads and which tells components to
//! hold off during a datastore migration (`datastoreReady: false`).
//!
//! It is not one of the [`Kind`](super::Kind)s that `calyx apply` writes: calicoctl refuses to
//! create or change it too, and only components write it. Values are always read leniently and
//! every field Calyx does not model (a newer Calico's spec fields, `metadata.generation`, ...) is
//! written back unchanged, so that a Calico sharing the etcd keeps what it stored.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::object::API_VERSION;
use super::types::de_helpers::null_default;

/// The kind name, as in `kind:`.
pub const CLUSTER_INFORMATION_KIND: &str = "ClusterInformation";

/// The only ClusterInformation Calico uses.
pub const CLUSTER_INFORMATION_NAME: &str = "default";

/// The etcd key prefix of ClusterInformation resources, with a trailing slash.
pub const CLUSTER_INFORMATION_PREFIX: &str =
    "/calico/resources/v3/projectcalico.org/clusterinformations/";

/// The etcd key of `clusterinformations/default`, where Calico keeps it.
pub const CLUSTER_INFORMATION_KEY: &str =
    "/calico/resources/v3/projectcalico.org/clusterinformations/default";

/// The names calicoctl accepts on its command line for this kind (case-insensitive).
pub const CLUSTER_INFORMATION_NAMES: [&str; 4] = [
    "clusterinformation",
    "clusterinformations",
    "clusterinfo",
    "clusterinfos",
];

/// The modelled fields of the spec, with Calico's names (`projectcalico.org/v3`
/// `ClusterInformationSpec`). Empty strings are omitted on output, as Calico's `omitempty`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInformationSpec {
    /// A random identifier of the cluster (32 hex digits when Calico or Calyx made it).
    #[serde(
        rename = "clusterGUID",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster_guid: String,
    /// Comma-separated cluster types (`k8s,bgp,kubeadm`, ...), from calico-node's `CLUSTER_TYPE`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster_type: String,
    /// The version of the node software that last started (Calico's or Calyx's).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub calico_version: String,
    /// `false` during a datastore migration: components must not write addresses until it is
    /// `true` again. Unset counts as ready (and is set to `true` by the first node to start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore_ready: Option<bool>,
    /// Which variant of Calico is active (`Calico`, `TigeraSecureEnterprise`).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub variant: String,
}

/// The spec fields [`ClusterInformationSpec`] models; anything else in a stored spec is kept as
/// it is.
const MODELLED_SPEC_FIELDS: [&str; 5] = [
    "clusterGUID",
    "clusterType",
    "calicoVersion",
    "datastoreReady",
    "variant",
];

/// A stored value could not be taken as a ClusterInformation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode ClusterInformation: {0}")]
pub struct ClusterInfoDecodeError(pub String);

/// A `ClusterInformation` resource: its typed spec plus the whole object as stored, so that a
/// write-back keeps what Calyx does not model.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterInformation {
    /// `metadata.name` (always `default` in practice).
    pub name: String,
    /// The modelled spec fields.
    pub spec: ClusterInformationSpec,
    /// The store revision this was read at (`metadata.resourceVersion` on output); `None` for
    /// an object that is not stored yet.
    pub revision: Option<i64>,
    /// The whole object as read (or as created), including fields Calyx does not model.
    raw: Map<String, Value>,
}

impl ClusterInformation {
    /// A new, unstored object with an empty spec.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let mut raw = Map::new();
        raw.insert("kind".into(), Value::from(CLUSTER_INFORMATION_KIND));
        raw.insert("apiVersion".into(), Value::from(API_VERSION));
        let mut metadata = Map::new();
        metadata.insert("name".into(), Value::from(name.clone()));
        raw.insert("metadata".into(), Value::Object(metadata));
        ClusterInformation {
            name,
            spec: ClusterInformationSpec::default(),
            revision: None,
            raw,
        }
    }

    /// Decodes a stored value leniently, as calico-node's Go decoder does: unknown fields are
    /// kept (not rejected), but a wrong `kind` or `apiVersion`, a missing name, or a modelled
    /// field of the wrong type (`datastoreReady: "yes"`) is an error.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ClusterInfoDecodeError> {
        let err = |m: String| ClusterInfoDecodeError(m);
        let value: Value = serde_json::from_slice(bytes).map_err(|e| err(e.to_string()))?;
        let Value::Object(raw) = value else {
            return Err(err("not a JSON object".into()));
        };
        match raw.get("kind").and_then(Value::as_str) {
            Some(CLUSTER_INFORMATION_KIND) => {}
            other => {
                return Err(err(format!(
                    "kind: expected {CLUSTER_INFORMATION_KIND:?}, found {other:?}"
                )))
            }
        }
        match raw.get("apiVersion").and_then(Value::as_str) {
            Some(API_VERSION) => {}
            other => {
                return Err(err(format!(
                    "apiVersion: expected {API_VERSION:?}, found {other:?}"
                )))
            }
        }
        let name = raw
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| err("metadata.name: missing".into()))?
            .to_string();
        let spec = match raw.get("spec") {
            None | Some(Value::Null) => ClusterInformationSpec::default(),
            Some(Value::Object(fields)) => {
                // Only the modelled fields go through the typed decoder, so that unknown ones
                // stay in `raw` instead of failing the decode.
                let known: Map<String, Value> = fields
                    .iter()
                    .filter(|(k, _)| MODELLED_SPEC_FIELDS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                serde_json::from_value(Value::Object(known))
                    .map_err(|e| err(format!("spec: {e}")))?
            }
            Some(other) => return Err(err(format!("spec: expected an object, found {other}"))),
        };
        Ok(ClusterInformation {
            name,
            spec,
            revision: None,
            raw,
        })
    }

    /// The whole object: what was read, with the modelled spec fields as they are now and
    /// `metadata.resourceVersion` when stored. This is what `calyx get` prints.
    pub fn to_value(&self) -> Value {
        let mut raw = self.raw.clone();
        let spec_entry = raw
            .entry("spec")
            .or_insert_with(|| Value::Object(Map::new()));
        if !spec_entry.is_object() {
            *spec_entry = Value::Object(Map::new());
        }
        if let Value::Object(spec) = spec_entry {
            for field in MODELLED_SPEC_FIELDS {
                spec.remove(field);
            }
            // A struct of strings and a bool always serializes to an object.
            if let Ok(Value::Object(modelled)) = serde_json::to_value(&self.spec) {
                spec.extend(modelled);
            }
        }
        let metadata = raw
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = metadata {
            m.insert("name".into(), Value::from(self.name.clone()));
            match self.revision {
                Some(rev) => m.insert("resourceVersion".into(), Value::from(rev.to_string())),
                None => m.remove("resourceVersion"),
            };
        }
        Value::Object(raw)
    }

    /// The value to store: [`ClusterInformation::to_value`] without `resourceVersion` (the
    /// store's revision is authoritative).
    pub fn to_json(&self) -> Vec<u8> {
        let mut value = self.to_value();
        if let Some(Value::Object(m)) = value.get_mut("metadata") {
            m.remove("resourceVersion");
        }
        // Serializing a JSON value cannot fail.
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// Sets a metadata field (`uid`, `creationTimestamp`) when it is not set yet.
    pub fn set_metadata_if_absent(&mut self, field: &str, value: String) {
        if let Some(Value::Object(m)) = self.raw.get_mut("metadata") {
            m.entry(field).or_insert_with(|| Value::from(value));
        }
    }

    /// True unless `datastoreReady` is explicitly `false`: the flag that tells components to
    /// wait during a datastore migration.
    pub fn datastore_ready(&self) -> bool {
        self.spec.datastore_ready != Some(false)
    }

    /// What calico-node's start-up (libcalico-go's `EnsureInitialized`) does to an existing
    /// object: record `version` when it differs, give it a GUID when it has none, set an unset
    /// `datastoreReady` to `true` (an explicit `false` stays: a migration is in progress), and
    /// add each of `cluster_type`'s comma-separated types that is missing. Returns whether
    /// anything changed (and so needs writing).
    pub fn initialize(
        &mut self,
        version: &str,
        cluster_type: &str,
        new_guid: impl FnOnce() -> String,
    ) -> bool {
        let mut changed = false;
        if !version.is_empty() && self.spec.calico_version != version {
            self.spec.calico_version = version.to_string();
            changed = true;
        }
        if self.spec.cluster_guid.is_empty() {
            self.spec.cluster_guid = new_guid();
            changed = true;
        }
        if self.spec.datastore_ready.is_none() {
            self.spec.datastore_ready = Some(true);
            changed = true;
        }
        let wanted: Vec<&str> = cluster_type
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        if self.spec.cluster_type.is_empty() {
            if !wanted.is_empty() {
                self.spec.cluster_type = wanted.join(",");
                changed = true;
            }
        } else {
            let mut types: Vec<String> = self
                .spec
                .cluster_type
                .split(',')
                .map(str::to_string)
                .collect();
            for t in wanted {
                if !types.iter().any(|have| have == t) {
                    types.push(t.to_string());
                    changed = true;
                }
            }
            if changed {
                self.spec.cluster_type = types.join(",");
            }
        }
        changed
    }

    /// A fresh object as the first node creates it: this version, the cluster type, a new GUID
    /// and `datastoreReady: true`.
    pub fn created(version: &str, cluster_type: &str, guid: String) -> Self {
        let mut ci = ClusterInformation::new(CLUSTER_INFORMATION_NAME);
        ci.initialize(version, cluster_type, || guid);
        ci
    }
}

/// A random cluster GUID as Calico makes it: 16 random bytes as 32 lower-case hex digits.
pub fn new_cluster_guid() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// True when `text` names the ClusterInformation kind as calicoctl accepts it.
pub fn is_cluster_information_kind(text: &str) -> bool {
    let lower = text.trim().to_ascii_lowercase();
    CLUSTER_INFORMATION_NAMES.contains(&lower.as_str())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// As Calico 3.29 stores it, plus fields Calyx does not model (a future spec field and
    /// Kubernetes metadata).
    const STORED: &str = r#"{"kind":"ClusterInformation","apiVersion":"projectcalico.org/v3","metadata":{"name":"default","uid":"5b7c","creationTimestamp":"2024-01-01T00:00:00Z","generation":4},"spec":{"clusterGUID":"0f3c5a9d4b8e4e2f9a1b2c3d4e5f6a7b","clusterType":"k8s,bgp,kubeadm","calicoVersion":"v3.29.1","datastoreReady":true,"futureKnob":{"x":1}}}"#;

    #[test]
    fn decodes_calico_values_and_keeps_unknown_fields() {
        let mut ci = ClusterInformation::from_json(STORED.as_bytes()).unwrap();
        assert_eq!(ci.name, "default");
        assert_eq!(ci.spec.calico_version, "v3.29.1");
        assert_eq!(ci.spec.cluster_type, "k8s,bgp,kubeadm");
        assert_eq!(ci.spec.datastore_ready, Some(true));
        assert!(ci.datastore_ready());
        ci.spec.calico_version = "v0.1.0".into();
        let back: Value = serde_json::from_slice(&ci.to_json()).unwrap();
        assert_eq!(back["spec"]["futureKnob"]["x"], 1);
        assert_eq!(back["spec"]["calicoVersion"], "v0.1.0");
        assert_eq!(back["metadata"]["generation"], 4);
        assert_eq!(back["metadata"]["uid"], "5b7c");
        assert!(back["metadata"].get("resourceVersion").is_none());
        ci.revision = Some(17);
        assert_eq!(ci.to_value()["metadata"]["resourceVersion"], "17");
        assert!(ci.to_value()["spec"].get("variant").is_none());
    }

    #[test]
    fn wrong_values_are_errors() {
        for (bad, want) in [
            (
                r#"{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"default"}}"#,
                "kind",
            ),
            (
                r#"{"kind":"ClusterInformation","apiVersion":"v1","metadata":{"name":"default"}}"#,
                "apiVersion",
            ),
            (
                r#"{"kind":"ClusterInformation","apiVersion":"projectcalico.org/v3","metadata":{}}"#,
                "metadata.name",
            ),
            (
                r#"{"kind":"ClusterInformation","apiVersion":"projectcalico.org/v3","metadata":{"name":"default"},"spec":{"datastoreReady":"yes"}}"#,
                "spec: invalid type",
            ),
            ("[1]", "not a JSON object"),
            ("{", "EOF"),
        ] {
            let e = ClusterInformation::from_json(bad.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(want), "{bad}: {e}");
        }
        // An explicit null reads as unset.
        let ci = ClusterInformation::from_json(br#"{"kind":"ClusterInformation","apiVersion":"projectcalico.org/v3","metadata":{"name":"default"},"spec":{"clusterType":null}}"#).unwrap();
        assert_eq!(ci.spec, ClusterInformationSpec::default());
        assert!(ci.datastore_ready());
    }

    #[test]
    fn initialize_follows_calico() {
        let ci = ClusterInformation::created("v0.1.0", "", "g1".into());
        assert_eq!(ci.spec.calico_version, "v0.1.0");
        assert_eq!(ci.spec.cluster_guid, "g1");
        assert_eq!(ci.spec.datastore_ready, Some(true));
        assert_eq!(ci.spec.cluster_type, "");
        let v: Value = serde_json::from_slice(&ci.to_json()).unwrap();
        assert_eq!(v["kind"], "ClusterInformation");
        assert_eq!(v["apiVersion"], "projectcalico.org/v3");
        assert_eq!(v["metadata"]["name"], "default");
        assert!(v["spec"].get("clusterType").is_none());

        // Explicit false stays; the version is updated; types are appended once.
        let mut ci = ClusterInformation::from_json(STORED.as_bytes()).unwrap();
        ci.spec.datastore_ready = Some(false);
        assert!(!ci.datastore_ready());
        assert!(ci.initialize("v0.1.0", "k8s, calyx", || unreachable!()));
        assert_eq!(ci.spec.datastore_ready, Some(false));
        assert_eq!(ci.spec.calico_version, "v0.1.0");
        assert_eq!(ci.spec.cluster_type, "k8s,bgp,kubeadm,calyx");
        assert!(!ci.initialize("v0.1.0", "calyx,bgp", || unreachable!()));

        // Unset ready becomes true, a missing GUID is made.
        let mut ci = ClusterInformation::new("default");
        assert!(ci.initialize("", "typhoon", || "g2".into()));
        assert_eq!(ci.spec.datastore_ready, Some(true));
        assert_eq!(ci.spec.cluster_guid, "g2");
        assert_eq!(ci.spec.cluster_type, "typhoon");
        assert_eq!(ci.spec.calico_version, "");
    }

    #[test]
    fn guid_and_names() {
        let g = new_cluster_guid();
        assert_eq!(g.len(), 32);
        assert!(g
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(g, new_cluster_guid());
        assert!(is_cluster_information_kind("ClusterInformation"));
        assert!(is_cluster_information_kind("clusterinfos"));
        assert!(!is_cluster_information_kind("ippool"));
        assert!(CLUSTER_INFORMATION_KEY.starts_with(CLUSTER_INFORMATION_PREFIX));
        assert!(CLUSTER_INFORMATION_KEY.ends_with(CLUSTER_INFORMATION_NAME));
    }
}
