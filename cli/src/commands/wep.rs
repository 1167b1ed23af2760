//! `calyx get workloadendpoints`, `calyx label workloadendpoint` and `calyx delete
//! workloadendpoint`: the per-pod records that
//! `calyx-cni` (or Calico's CNI plugin) writes, namespaced as in calicoctl (`-n NS`, default
//! `default`; `-A` for all namespaces on `get`).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde_json::Value;

use calyx_datastore::resources::WORKLOAD_ENDPOINT_KIND;
use calyx_datastore::wep_client::WepDeleted;

use crate::args::{DatastoreArgs, GetArgs, LabelArgs, OutputFormat};
use crate::{connect, table};

/// The namespace calicoctl uses when none is given.
const DEFAULT_NAMESPACE: &str = "default";

/// True for the names calicoctl accepts for this kind (case-insensitive).
pub fn is_wep_kind(text: &str) -> bool {
    matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "workloadendpoint" | "workloadendpoints" | "wep" | "weps"
    )
}

/// `calyx get workloadendpoints [NAME] [-n NS | -A] [-o ...]`.
pub async fn get(datastore: &DatastoreArgs, args: GetArgs) -> Result<()> {
    let client = connect::client(datastore).await?;
    let namespace = args.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    let weps = match (&args.name, args.all_namespaces) {
        (Some(name), false) => match client.workload_endpoint(namespace, name).await? {
            Some(w) => vec![w],
            None => anyhow::bail!(
                "{WORKLOAD_ENDPOINT_KIND} {name:?} does not exist in namespace {namespace:?}"
            ),
        },
        (Some(name), true) => {
            let mut all = client.list_workload_endpoints(None).await?;
            all.retain(|w| &w.metadata.name == name);
            if all.is_empty() {
                anyhow::bail!("{WORKLOAD_ENDPOINT_KIND} {name:?} does not exist");
            }
            all
        }
        (None, true) => client.list_workload_endpoints(None).await?,
        (None, false) => client.list_workload_endpoints(Some(namespace)).await?,
    };
    let values: Vec<Value> = weps
        .iter()
        .map(|w| serde_json::to_value(w).context("cannot encode a WorkloadEndpoint"))
        .collect::<Result<_>>()?;
    // As calicoctl: the NAMESPACE column appears when a namespace was named or all were asked.
    let with_namespace = args.all_namespaces || args.namespace.is_some();
    let text = match args.output {
        OutputFormat::Ps => table::render_workload_endpoints(false, with_namespace, &values),
        OutputFormat::Wide => table::render_workload_endpoints(true, with_namespace, &values),
        format => super::get::encode(
            super::get::list_document(WORKLOAD_ENDPOINT_KIND, args.name.is_some(), &values),
            format,
        )?,
    };
    print!("{text}");
    Ok(())
}

/// `calyx label workloadendpoint NAME [-n NS] k=v ...`; changing a set label needs
/// `--overwrite`, as for the other kinds.
pub async fn label(
    datastore: &DatastoreArgs,
    args: &LabelArgs,
    changes: &BTreeMap<String, Option<String>>,
) -> Result<()> {
    let namespace = args.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    let client = connect::client(datastore).await?;
    if !args.overwrite {
        let Some(current) = client.workload_endpoint(namespace, &args.name).await? else {
            anyhow::bail!(
                "{WORKLOAD_ENDPOINT_KIND} {:?} does not exist in namespace {namespace:?}",
                args.name
            );
        };
        for (key, value) in changes {
            if let (Some(new), Some(old)) = (value, current.metadata.labels.get(key)) {
                if new != old {
                    anyhow::bail!(
                        "label {key:?} is already set to {old:?}; use --overwrite to change it"
                    );
                }
            }
        }
    }
    client
        .label_workload_endpoint(namespace, &args.name, changes)
        .await?;
    println!(
        "Successfully updated labels of {WORKLOAD_ENDPOINT_KIND} {:?} in namespace {namespace:?}",
        args.name
    );
    Ok(())
}

/// `calyx delete workloadendpoint NAME [-n NS]`: removes the record whatever container it
/// names (a user's delete, unlike a CNI DEL, is not tied to one sandbox). The pod's address
/// stays allocated; the node's collector frees it once the workload's interface is gone too.
pub async fn delete(
    datastore: &DatastoreArgs,
    name: &str,
    namespace: Option<&str>,
    skip_not_exists: bool,
) -> Result<()> {
    let namespace = namespace.unwrap_or(DEFAULT_NAMESPACE);
    let client = connect::client(datastore).await?;
    let Some(current) = client.workload_endpoint(namespace, name).await? else {
        if skip_not_exists {
            println!("Successfully deleted 0 resource(s)");
            return Ok(());
        }
        anyhow::bail!(
            "{WORKLOAD_ENDPOINT_KIND} {name:?} does not exist in namespace {namespace:?}"
        );
    };
    match client
        .delete_workload_endpoint(namespace, name, &current.spec.container_id)
        .await?
    {
        WepDeleted::Deleted => println!("Successfully deleted 1 resource(s)"),
        WepDeleted::Absent if skip_not_exists => println!("Successfully deleted 0 resource(s)"),
        WepDeleted::Absent => anyhow::bail!(
            "{WORKLOAD_ENDPOINT_KIND} {name:?} does not exist in namespace {namespace:?}"
        ),
        // A new sandbox rewrote it between the read and the delete: leave the new one.
        WepDeleted::OtherContainer => anyhow::bail!(
            "{WORKLOAD_ENDPOINT_KIND} {name:?} in namespace {namespace:?} was rewritten by a new \
             container meanwhile; read it again and retry"
        ),
    }
    Ok(())
}
