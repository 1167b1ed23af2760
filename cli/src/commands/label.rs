//! `calyx patch` and `calyx label`: read-modify-write of one stored resource.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::args::{DatastoreArgs, LabelArgs, PatchArgs};
use crate::connect;

/// Applies a JSON merge patch; the result must pass every check of `replace`.
pub async fn patch(datastore: &DatastoreArgs, args: PatchArgs) -> Result<()> {
    let kind = super::parse_kind(&args.kind)?;
    let patch: serde_json::Value =
        serde_json::from_str(&args.patch).context("--patch is not valid JSON")?;
    let client = connect::client(datastore).await?;
    client.patch(kind, &args.name, &patch).await?;
    println!("Successfully patched 1 '{}' resource", kind.as_str());
    Ok(())
}

/// What the label arguments ask for: `Some(value)` sets, `None` removes.
fn label_changes(args: &LabelArgs) -> Result<BTreeMap<String, Option<String>>> {
    let mut changes = BTreeMap::new();
    for spec in &args.labels {
        if args.remove {
            changes.insert(spec.trim_end_matches('-').to_string(), None);
        } else if let Some((key, value)) = spec.split_once('=') {
            changes.insert(key.to_string(), Some(value.to_string()));
        } else if let Some(key) = spec.strip_suffix('-') {
            changes.insert(key.to_string(), None);
        } else {
            anyhow::bail!("label {spec:?}: expected key=value, key- or --remove key");
        }
    }
    Ok(changes)
}

/// Sets or removes labels; changing the value of a set label needs `--overwrite`.
pub async fn label(datastore: &DatastoreArgs, args: LabelArgs) -> Result<()> {
    if super::wep::is_wep_kind(&args.kind) {
        let changes = label_changes(&args)?;
        return super::wep::label(datastore, &args, &changes).await;
    }
    let kind = super::parse_kind(&args.kind)?;
    let changes = label_changes(&args)?;
    let client = connect::client(datastore).await?;
    if !args.overwrite {
        let Some(current) = client.get(kind, &args.name).await? else {
            anyhow::bail!("{} {:?} does not exist", kind.as_str(), args.name);
        };
        for (key, value) in &changes {
            if let (Some(new), Some(old)) = (value, current.metadata().labels.get(key)) {
                if new != old {
                    anyhow::bail!(
                        "label {key:?} is already set to {old:?}; use --overwrite to change it"
                    );
                }
            }
        }
    }
    client.label(kind, &args.name, &changes).await?;
    println!(
        "Successfully updated labels of {} {:?}",
        kind.as_str(),
        args.name
    );
    Ok(())
}
