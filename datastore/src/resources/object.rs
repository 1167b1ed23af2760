//! Object metadata and the Kubernetes-shaped envelope (`apiVersion`, `kind`, `metadata`, `spec`)
//! shared by every resource kind.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use super::types::de_helpers::null_default;
use super::Kind;

/// The only API version Calyx reads and writes.
pub const API_VERSION: &str = "projectcalico.org/v3";

/// Kubernetes-style object metadata. Optional fields are omitted from the output when empty.
/// Unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// The object's name, unique within its kind (a DNS-1123 subdomain).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
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

/// The `status` of a kind that has none: present at all is an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) enum NoStatus {}

impl<'de> Deserialize<'de> for NoStatus {
    fn deserialize<D: Deserializer<'de>>(_d: D) -> Result<Self, D::Error> {
        Err(de::Error::custom("this kind has no status field"))
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
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
}

/// Serializes `{apiVersion, kind, metadata, spec[, status]}` in that order (calicoctl's order).
pub(crate) fn serialize_object<S, Sp, St>(
    s: S,
    kind: Kind,
    metadata: &ObjectMeta,
    spec: &Sp,
    status: Option<&St>,
) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    Sp: Serialize,
    St: Serialize,
{
    let mut st = s.serialize_struct(kind.as_str(), 4 + usize::from(status.is_some()))?;
    st.serialize_field("apiVersion", API_VERSION)?;
    st.serialize_field("kind", kind.as_str())?;
    st.serialize_field("metadata", metadata)?;
    st.serialize_field("spec", spec)?;
    if let Some(status) = status {
        st.serialize_field("status", status)?;
    }
    st.end()
}

/// Deserializes the envelope of an object of `kind`; a missing `spec` is read as `{}` (so
/// required spec fields are reported as missing).
pub(crate) fn deserialize_object<'de, D, Sp, St>(
    d: D,
    kind: Kind,
) -> Result<(ObjectMeta, Sp, Option<St>), D::Error>
where
    D: Deserializer<'de>,
    Sp: Deserialize<'de>,
    St: Deserialize<'de>,
{
    let w = WireIn::<Sp, St>::deserialize(d)?;
    if w.kind != kind.as_str() {
        return Err(de::Error::custom(format!(
            "kind: expected {:?}, found {:?}",
            kind.as_str(),
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
    Ok((w.metadata, spec, w.status))
}

/// Implements Serialize/Deserialize/Display plumbing for a resource struct without status.
macro_rules! calico_object {
    ($ty:ident, $spec:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $crate::resources::object::serialize_object::<
                    _,
                    _,
                    $crate::resources::object::NoStatus,
                >(s, Kind::$ty, &self.metadata, &self.spec, None)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let (metadata, spec, _) = $crate::resources::object::deserialize_object::<
                    _,
                    $spec,
                    $crate::resources::object::NoStatus,
                >(d, Kind::$ty)?;
                Ok($ty { metadata, spec })
            }
        }

        impl $ty {
            /// Creates the object with the given name and spec.
            pub fn new(name: impl Into<String>, spec: $spec) -> Self {
                $ty {
                    metadata: $crate::resources::ObjectMeta::named(name),
                    spec,
                }
            }
        }
    };
}
pub(crate) use calico_object;
