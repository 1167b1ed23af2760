//! `calyx get` of the policy kinds (calicoctl's columns) and `calyx policy show WORKLOAD`.

use anyhow::{Context, Result};
use calyx_datastore::policy::{store, PolicyKind};
use calyx_node::policy::{calc, PolicyView};
use serde_json::Value;

use crate::args::{DatastoreArgs, GetArgs, OutputFormat};
use crate::{connect, table};

/// `calyx get networkpolicies|globalnetworkpolicies|profiles|networksets|globalnetworksets|
/// tiers [NAME] [-n NS | -A] [-o ...]`.
pub async fn get(datastore: &DatastoreArgs, args: GetArgs, kind: PolicyKind) -> Result<()> {
    let client = connect::client(datastore).await?;
    let namespace = args.namespace.as_deref().unwrap_or("default");
    let scope = (kind.namespaced() && !args.all_namespaces).then_some(namespace);
    let mut objects = store::list(client.store(), kind, scope).await?;
    if let Some(name) = &args.name {
        objects.retain(|o| o.name() == name);
        if objects.is_empty() {
            anyhow::bail!("{kind} {name:?} does not exist");
        }
    }
    let values: Vec<Value> = objects.into_iter().map(|o| o.value).collect();
    let with_namespace = kind.namespaced() && (args.all_namespaces || args.namespace.is_some());
    let text = match args.output {
        OutputFormat::Ps => table::render_policy(kind, false, with_namespace, &values),
        OutputFormat::Wide => table::render_policy(kind, true, with_namespace, &values),
        format => super::get::encode(
            super::get::list_document(kind.as_str(), args.name.is_some(), &values),
            format,
        )?,
    };
    print!("{text}");
    Ok(())
}

/// `calyx policy show NAME [-n NS]`: what applies to one WorkloadEndpoint, in evaluation
/// order, computed as the node daemon computes it.
pub async fn show(datastore: &DatastoreArgs, namespace: &str, name: &str) -> Result<()> {
    let client = connect::client(datastore).await?;
    let view = PolicyView::read(client.store())
        .await
        .context("cannot read the policy objects")?;
    let key = calyx_datastore::resources::WorkloadEndpoint::key_of(namespace, name);
    let Some(w) = view.weps.get(&key) else {
        anyhow::bail!("WorkloadEndpoint {name:?} does not exist in namespace {namespace:?}");
    };
    let a = calc::applicable(&view, w);
    println!(
        "WorkloadEndpoint {namespace}/{name} (node {}, interface {})",
        w.spec.node, w.spec.interface_name
    );
    for (dir, tiers) in [("Ingress", &a.ingress), ("Egress", &a.egress)] {
        println!("{dir}:");
        if tiers.is_empty() {
            println!("  no policy: the profiles decide");
        }
        for (tier, pass, policies) in tiers {
            let end = if *pass { "Pass" } else { "Deny" };
            println!("  tier {tier} (end of tier: {end})");
            for p in policies {
                println!("    {p}");
            }
        }
    }
    if a.profiles.is_empty() {
        println!("Profiles: none in the datastore (traffic no policy decides is allowed)");
    } else {
        println!("Profiles: {}", a.profiles.join(", "));
    }
    Ok(())
}
