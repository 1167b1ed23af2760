//! `FelixConfiguration`: Felix's settings (`default` for the cluster, `node.<name>` per node).
//!
//! Calyx does not act on these settings yet; it stores them as written (validated only for
//! their field names, against Calico 3.31's API in [`super::schema`]) so that a Calico cluster's
//! configuration survives, `calyx get felixconfigurations` shows it unchanged and `calyx
//! apply` takes calicoctl's YAML for it.

use serde_json::{Map, Value};

use super::object::calico_object;
use super::validate::Problems;
use super::{Kind, ObjectMeta, ValidationError};

/// A Felix configuration (`kind: FelixConfiguration`). The spec is kept whole, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FelixConfiguration {
    /// Name (`default` or `node.<nodename>`), labels, revision.
    pub metadata: ObjectMeta,
    /// The settings, exactly as written (Calico's field names and values).
    pub spec: Map<String, Value>,
    /// Top-level fields Calyx does not model, kept as read.
    pub extra: Map<String, Value>,
}

calico_object!(FelixConfiguration, Map<String, Value>);

impl FelixConfiguration {
    /// Every problem with this object (empty when valid): the name and labels; the spec's
    /// values are Felix's to judge.
    pub fn validate_all(&self) -> Vec<ValidationError> {
        let mut p = Problems::new(Kind::FelixConfiguration, &self.metadata.name);
        p.check_subdomain_name(&self.metadata.name);
        p.check_labels("metadata.labels", &self.metadata.labels);
        p.errors
    }
}
