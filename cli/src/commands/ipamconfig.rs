//! `calyx get ipamconfiguration(s) [default]`: Calico's `IPAMConfiguration` `default`, which
//! in etcd is IPAM's own record at `/calico/ipam/v2/config` (`strict_affinity`,
//! `auto_allocate_blocks`, `maxBlocksPerHost`), shown as calicoctl shows it: a
//! `projectcalico.org/v3` object with `strictAffinity`, `autoAllocateBlocks` and
//! `maxBlocksPerHost` (left out when 0, as calicoctl's `omitempty`). Read-only here; `calyx ipam
//! configure` changes it. When the record does not exist there is no object, as in calicoctl
//! (IPAM then uses its defaults).

use anyhow::{Context, Result};
use calyx_datastore::resources::ipam::{IPAMConfig, IPAM_CONFIG_KEY};
use calyx_datastore::store::Store;
use serde_json::{json, Map, Value};

use crate::args::{DatastoreArgs, GetArgs, OutputFormat};
use crate::connect;

/// The kind's name in documents.
const KIND: &str = "IPAMConfiguration";
/// The only IPAMConfiguration there is.
const NAME: &str = "default";

/// Whether `text` names the kind (calicoctl's spellings, case-insensitive).
pub fn is_ipam_config_kind(text: &str) -> bool {
    matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "ipamconfiguration" | "ipamconfigurations" | "ipamconfig" | "ipamconfigs"
    )
}

/// The v3 object for the stored record `config` at etcd revision `revision`.
pub fn to_value(config: &IPAMConfig, revision: i64) -> Value {
    let mut spec = Map::new();
    spec.insert("strictAffinity".into(), Value::from(config.strict_affinity));
    spec.insert(
        "autoAllocateBlocks".into(),
        Value::from(config.auto_allocate_blocks),
    );
    if config.max_blocks_per_host != 0 {
        spec.insert(
            "maxBlocksPerHost".into(),
            Value::from(config.max_blocks_per_host),
        );
    }
    json!({
        "apiVersion": "projectcalico.org/v3",
        "kind": KIND,
        "metadata": {"name": NAME, "resourceVersion": revision.to_string()},
        "spec": spec,
    })
}

/// Prints the configuration (by name `default`, or the list of the one there is).
pub async fn get(datastore: &DatastoreArgs, args: GetArgs) -> Result<()> {
    let client = connect::client(datastore).await?;
    let mut values = Vec::new();
    if let Some(kv) = client.store().get(IPAM_CONFIG_KEY).await? {
        let config: IPAMConfig = serde_json::from_slice(&kv.value)
            .with_context(|| format!("stored value at {IPAM_CONFIG_KEY} is not IPAM's config"))?;
        values.push(to_value(&config, kv.mod_revision));
    }
    if let Some(name) = &args.name {
        if name != NAME || values.is_empty() {
            anyhow::bail!("{KIND} {name:?} does not exist");
        }
    }
    let text = match args.output {
        // calicoctl's table for its configuration kinds: the name only.
        OutputFormat::Ps | OutputFormat::Wide => {
            let mut out = String::from("NAME\n");
            for _ in &values {
                out.push_str(NAME);
                out.push('\n');
            }
            out
        }
        format => super::get::encode(
            super::get::list_document(KIND, args.name.is_some(), &values),
            format,
        )?,
    };
    print!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shown_as_calicoctl() {
        let stored: IPAMConfig = serde_json::from_str(
            r#"{"strict_affinity":true,"auto_allocate_blocks":true,"maxBlocksPerHost":4}"#,
        )
        .unwrap();
        let v = to_value(&stored, 7);
        assert_eq!(v["kind"], "IPAMConfiguration");
        assert_eq!(v["metadata"]["name"], "default");
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        assert_eq!(v["spec"]["strictAffinity"], true);
        assert_eq!(v["spec"]["autoAllocateBlocks"], true);
        assert_eq!(v["spec"]["maxBlocksPerHost"], 4);
        let v = to_value(&IPAMConfig::default(), 1);
        assert!(v["spec"].get("maxBlocksPerHost").is_none());
        assert!(is_ipam_config_kind("IPAMConfigs"));
        assert!(!is_ipam_config_kind("ipampool"));
    }
}
