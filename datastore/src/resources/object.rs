//! Object metadata and the Kubernetes-shaped envelope (`apiVersion`, `kind`, `metadata`, `spec`)
//! shared by every resource kind.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::types::de_helpers::null_default;

/// The only API version Calyx reads and writes.
pub const API_VERSION: &str = "projectcalico.org/v3";

/// Kubernetes-style object metadata. Optional fields are omitted from the output when empty.
/// Fields Calyx does not model (`generation`, `ownerReferences`, `finalizers`, ...) are kept in
/// [`ObjectMeta::extra`] and written back unchanged; user input is checked against Calico's
/// API by [`super::schema`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// The object's name, unique within its kind (a DNS-1123 subdomain).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    /// The namespace of a namespaced kind (`WorkloadEndpoint`); empty for the others.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub namespace: String,
    /// Labels, matched by selectors (e.g. a Node's labels by an IPPool's `nodeSelector`).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    /// The datastore revision of this object (the etcd `mod_revision`), set by the store on
    /// read and used for compare-and-swap; never stored in the value itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// A unique id assigned when the object is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Creation time, RFC 3339 (`2024-05-01T12:00:00Z`), assigned when the object is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Every other metadata field, as read (Kubernetes' `generation`, `ownerReferences`,
    /// `managedFields`, ... as Calico or its controllers stored them).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ObjectMeta {
    /// Metadata with just a name.
    pub fn named(name: impl Into<String>) -> Self {
        ObjectMeta {
            name: name.into(),
            ..ObjectMeta::default()
        }
    }
}

/// Accepts only `projectcalico.org/v3`.
struct ApiVersion;

impl<'de> Deserialize<'de> for ApiVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == API_VERSION {
            Ok(ApiVersion)
        } else {
            Err(de::Error::custom(format!(
                "unsupported apiVersion {s:?}, expected {API_VERSION:?}"
            )))
        }
    }
}

#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "S: Deserialize<'de>, St: Deserialize<'de>")
)]
struct WireIn<S, St> {
    #[allow(dead_code)]
    api_version: ApiVersion,
    kind: String,
    #[serde(default, deserialize_with = "null_default")]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<S>,
    #[serde(default)]
    status: Option<St>,
    /// Top-level fields of a newer Calico, kept.
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// A decoded envelope: metadata, spec, status (when the kind has one) and the other
/// top-level fields.
pub(crate) struct Envelope<Sp, St> {
    pub(crate) metadata: ObjectMeta,
    pub(crate) spec: Sp,
    pub(crate) status: Option<St>,
    pub(crate) extra: Map<String, Value>,
}

/// Serializes `{apiVersion, kind, metadata, spec[, status], extra...}` in that order
/// (calicoctl's order, then the fields Calyx does not model).
pub(crate) fn serialize_object<S, Sp, St>(
    s: S,
    kind: &str,
    metadata: &ObjectMeta,
    spec: &Sp,
    status: Option<&St>,
    extra: &Map<String, Value>,
) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    Sp: Serialize,
    St: Serialize,
{
    let mut st = s.serialize_map(None)?;
    st.serialize_entry("apiVersion", API_VERSION)?;
    st.serialize_entry("kind", kind)?;
    st.serialize_entry("metadata", metadata)?;
    st.serialize_entry("spec", spec)?;
    if let Some(status) = status {
        st.serialize_entry("status", status)?;
    }
    for (k, v) in extra {
        if !matches!(
            k.as_str(),
            "apiVersion" | "kind" | "metadata" | "spec" | "status"
        ) || (k == "status" && status.is_none())
        {
            st.serialize_entry(k, v)?;
        }
    }
    st.end()
}

/// Deserializes the envelope of an object of kind `kind`; a missing `spec` is read as `{}` (so
/// required spec fields are reported as missing). Unknown top-level fields are kept in
/// `extra`; for a kind without a status, `St` = [`Value`] and the caller moves it there.
pub(crate) fn deserialize_object<'de, D, Sp, St>(
    d: D,
    kind: &str,
) -> Result<Envelope<Sp, St>, D::Error>
where
    D: Deserializer<'de>,
    Sp: Deserialize<'de>,
    St: Deserialize<'de>,
{
    let w = WireIn::<Sp, St>::deserialize(d)?;
    if w.kind != kind {
        return Err(de::Error::custom(format!(
            "kind: expected {kind:?}, found {:?}",
            w.kind
        )));
    }
    let spec = match w.spec {
        Some(s) => s,
        None => Sp::deserialize(de::value::MapDeserializer::<_, D::Error>::new(
            std::iter::empty::<(&str, &str)>(),
        ))
        .map_err(|e| de::Error::custom(format!("spec: {e}")))?,
    };
    Ok(Envelope {
        metadata: w.metadata,
        spec,
        status: w.status,
        extra: w.extra,
    })
}

/// Implements Serialize/Deserialize/Display plumbing for a resource struct without status.
macro_rules! calico_object {
    ($ty:ident, $spec:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $crate::resources::object::serialize_object::<_, _, serde_json::Value>(
                    s,
                    Kind::$ty.as_str(),
                    &self.metadata,
                    &self.spec,
                    None,
                    &self.extra,
                )
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let e = $crate::resources::object::deserialize_object::<
                    _,
                    $spec,
                    serde_json::Value,
                >(d, Kind::$ty.as_str())?;
                let mut extra = e.extra;
                // This kind has no status in Calyx's model; a newer Calico's is kept.
                if let Some(status) = e.status {
                    extra.insert("status".into(), status);
                }
                Ok($ty {
                    metadata: e.metadata,
                    spec: e.spec,
                    extra,
                })
            }
        }

        impl $ty {
            /// Creates the object with the given name and spec.
            pub fn new(name: impl Into<String>, spec: $spec) -> Self {
                $ty {
                    metadata: $crate::resources::ObjectMeta::named(name),
                    spec,
                    extra: serde_json::Map::new(),
                }
            }
        }
    };
}
pub(crate) use calico_object;
