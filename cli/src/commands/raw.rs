//! `calyx get` of Calico kinds that Calyx neither models nor writes
//! (KubeControllersConfiguration, which calico-kube-controllers owns): read-only and shown
//! exactly as stored, with calicoctl's names for them and its one-column table (`NAME`).

use anyhow::{Context, Result};
use calyx_datastore::store::Store;
use serde_json::Value;

use crate::args::{DatastoreArgs, GetArgs, OutputFormat};
use crate::connect;

/// A kind shown as stored: its `kind:` name and its plural in etcd keys.
pub struct RawKind {
    kind: &'static str,
    plural: &'static str,
}

/// The kind `text` names (calicoctl's spellings, case-insensitive), if it is one of these.
pub fn raw_kind(text: &str) -> Option<RawKind> {
    let (kind, plural) = match text.trim().to_ascii_lowercase().as_str() {
        "kubecontrollersconfiguration"
        | "kubecontrollersconfigurations"
        | "kubecontrollersconfig"
        | "kubecontrollersconfigs" => (
            "KubeControllersConfiguration",
            "kubecontrollersconfigurations",
        ),
        _ => return None,
    };
    Some(RawKind { kind, plural })
}

/// Prints the stored objects of `raw` (one by name, or all), with `metadata.resourceVersion`
/// set to the etcd revision as for the other kinds.
pub async fn get(datastore: &DatastoreArgs, args: GetArgs, raw: RawKind) -> Result<()> {
    let client = connect::client(datastore).await?;
    let prefix = format!("/calico/resources/v3/projectcalico.org/{}/", raw.plural);
    let listing = client.store().list(&prefix).await?;
    let mut values = Vec::new();
    for kv in &listing.kvs {
        let mut v: Value = serde_json::from_slice(&kv.value)
            .with_context(|| format!("stored value at {} is not JSON", kv.key))?;
        if let Some(Value::Object(meta)) = v.get_mut("metadata") {
            meta.insert(
                "resourceVersion".into(),
                Value::from(kv.mod_revision.to_string()),
            );
        }
        let name = v.pointer("/metadata/name").and_then(Value::as_str);
        if args.name.as_deref().is_none_or(|n| Some(n) == name) {
            values.push(v);
        }
    }
    if let (Some(name), true) = (&args.name, values.is_empty()) {
        anyhow::bail!("{} {name:?} does not exist", raw.kind);
    }
    let text = match args.output {
        OutputFormat::Ps | OutputFormat::Wide => {
            let mut out = String::from("NAME\n");
            for v in &values {
                out.push_str(
                    v.pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                );
                out.push('\n');
            }
            out
        }
        format => super::get::encode(
            super::get::list_document(raw.kind, args.name.is_some(), &values),
            format,
        )?,
    };
    print!("{text}");
    Ok(())
}
