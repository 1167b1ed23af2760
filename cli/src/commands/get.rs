//! `calyx get KIND [NAME] [-o ps|wide|yaml|json]`.

use anyhow::{Context, Result};
use calyx_datastore::resources::{Kind, Resource};
use serde_json::{json, Value};

use crate::args::{DatastoreArgs, GetArgs, OutputFormat};
use crate::{connect, table};

/// Prints one resource or all of a kind.
pub async fn run(datastore: &DatastoreArgs, args: GetArgs) -> Result<()> {
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
    let document = if single && values.len() == 1 {
        values[0].clone()
    } else {
        json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": format!("{}List", kind.as_str()),
            "items": values,
        })
    };
    Ok(match output {
        OutputFormat::Ps => table::render(kind, false, &values),
        OutputFormat::Wide => table::render(kind, true, &values),
        OutputFormat::Yaml => {
            let mut s = serde_yaml_ng::to_string(&document).context("cannot encode YAML")?;
            if !s.ends_with('\n') {
                s.push('\n');
            }
            s
        }
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(&document).context("cannot encode JSON")?;
            s.push('\n');
            s
        }
    })
}
