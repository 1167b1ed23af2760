//! `calyx get KIND [NAME] [-o ps|wide|yaml|json]`.

use anyhow::{Context, Result};
use calyx_datastore::resources::{
    is_cluster_information_kind, Kind, Resource, CLUSTER_INFORMATION_KIND,
};
use serde_json::{json, Value};

use crate::args::{DatastoreArgs, GetArgs, OutputFormat};
use crate::{connect, table};

/// Prints one resource or all of a kind.
pub async fn run(datastore: &DatastoreArgs, args: GetArgs) -> Result<()> {
    if is_cluster_information_kind(&args.kind) {
        return cluster_information(datastore, args).await;
    }
    if super::wep::is_wep_kind(&args.kind) {
        return super::wep::get(datastore, args).await;
    }
    if super::ipamconfig::is_ipam_config_kind(&args.kind) {
        return super::ipamconfig::get(datastore, args).await;
    }
    if let Some(kind) = calyx_datastore::policy::PolicyKind::parse(&args.kind) {
        return super::policy::get(datastore, args, kind).await;
    }
    if let Some(raw) = super::raw::raw_kind(&args.kind) {
        return super::raw::get(datastore, args, raw).await;
    }
    let kind = super::parse_kind(&args.kind)?;
    let client = connect::client(datastore).await?;
    let resources = match &args.name {
        Some(name) => match client.get(kind, name).await? {
            Some(r) => vec![r],
            None => anyhow::bail!("{} {name:?} does not exist", kind.as_str()),
        },
        None => client.list(kind).await?,
    };
    print!(
        "{}",
        format(kind, args.name.is_some(), args.output, &resources)?
    );
    Ok(())
}

/// `calyx get clusterinformation(s) [default]`: read-only, as in calicoctl, and kept apart
/// from the kinds `apply` writes.
async fn cluster_information(datastore: &DatastoreArgs, args: GetArgs) -> Result<()> {
    let client = connect::client(datastore).await?;
    let mut all = client.list_cluster_information().await?;
    if let Some(name) = &args.name {
        all.retain(|ci| &ci.name == name);
        if all.is_empty() {
            anyhow::bail!("{CLUSTER_INFORMATION_KIND} {name:?} does not exist");
        }
    }
    let values: Vec<Value> = all.iter().map(|ci| ci.to_value()).collect();
    let text = match args.output {
        OutputFormat::Ps | OutputFormat::Wide => table::render_cluster_information(&values),
        format => encode(
            list_document(CLUSTER_INFORMATION_KIND, args.name.is_some(), &values),
            format,
        )?,
    };
    print!("{text}");
    Ok(())
}

/// One object when one was asked for by name, else a calicoctl-style `<Kind>List`.
pub(super) fn list_document(kind: &str, single: bool, values: &[Value]) -> Value {
    if single && values.len() == 1 {
        values[0].clone()
    } else {
        json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": format!("{kind}List"),
            "items": values,
        })
    }
}

/// A document as YAML or JSON text, ending in a newline.
pub(super) fn encode(document: Value, output: OutputFormat) -> Result<String> {
    Ok(match output {
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(&document).context("cannot encode JSON")?;
            s.push('\n');
            s
        }
        _ => {
            let mut s = serde_yaml_ng::to_string(&document).context("cannot encode YAML")?;
            if !s.ends_with('\n') {
                s.push('\n');
            }
            s
        }
    })
}

/// Formats resources: a table, or the objects themselves (a calicoctl-style `<Kind>List` when
/// more than one was asked for), which `calyx apply` takes back unchanged.
fn format(
    kind: Kind,
    single: bool,
    output: OutputFormat,
    resources: &[Resource],
) -> Result<String> {
    let values: Vec<Value> = resources
        .iter()
        .map(|r| serde_json::to_value(r).context("cannot encode a resource"))
        .collect::<Result<_>>()?;
    Ok(match output {
        OutputFormat::Ps => table::render(kind, false, &values),
        OutputFormat::Wide => table::render(kind, true, &values),
        OutputFormat::Yaml | OutputFormat::Json => {
            encode(list_document(kind.as_str(), single, &values), output)?
        }
    })
}
