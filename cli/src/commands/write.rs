//! `calyx create|apply|replace|validate -f FILE` and `calyx delete`.

use anyhow::Result;
use calyx_datastore::client::{ClientError, WriteMode, WriteOutcome};
use calyx_datastore::resources::Kind;

use crate::args::{DatastoreArgs, DeleteArgs, FileArgs};
use crate::connect;

/// What a file command does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `create`: every resource must be new.
    Create,
    /// `apply`: create or update.
    Apply,
    /// `replace`: every resource must exist.
    Replace,
    /// `validate`: every check of `apply`, nothing written.
    Validate,
}

/// Parses and validates every document, then writes them all or none.
pub async fn write(datastore: &DatastoreArgs, args: &FileArgs, action: Action) -> Result<()> {
    let resources = super::read_documents(&args.filename)?;
    let client = connect::client(datastore).await?;
    let mode = match action {
        Action::Create => WriteMode::Create,
        Action::Replace => WriteMode::Replace,
        Action::Apply | Action::Validate => WriteMode::Apply,
    };
    let count = resources.len();
    if action == Action::Validate {
        client.check_all(mode, &resources).await?;
        println!("Successfully validated {count} resource(s)");
        return Ok(());
    }
    let outcomes = client.write_all(mode, resources).await?;
    let verb = match action {
        Action::Create => "created",
        Action::Replace => "replaced",
        _ => "applied",
    };
    let created = outcomes
        .iter()
        .filter(|o| **o == WriteOutcome::Created)
        .count();
    println!(
        "Successfully {verb} {count} resource(s) ({created} created, {} updated)",
        count - created
    );
    Ok(())
}

/// Deletes the resources named in a file (all must exist unless `--skip-not-exists`), or one
/// by kind and name. A Node is deleted with everything of it (see [`super::delete_node`]).
pub async fn delete(datastore: &DatastoreArgs, args: DeleteArgs) -> Result<()> {
    if let (None, Some(kind), Some(name)) = (&args.filename, &args.kind, &args.name) {
        if super::wep::is_wep_kind(kind) {
            return super::wep::delete(
                datastore,
                name,
                args.namespace.as_deref(),
                args.skip_not_exists,
            )
            .await;
        }
    }
    let targets: Vec<(Kind, String)> = match &args.filename {
        Some(path) => super::read_documents(path)?
            .iter()
            .map(|r| (r.kind(), r.name().to_string()))
            .collect(),
        None => {
            let (Some(kind), Some(name)) = (&args.kind, &args.name) else {
                anyhow::bail!("give -f FILE, or KIND and NAME");
            };
            vec![(super::parse_kind(kind)?, name.clone())]
        }
    };
    let client = connect::client(datastore).await?;
    if !args.skip_not_exists {
        for (kind, name) in &targets {
            if client.get(*kind, name).await?.is_none() {
                anyhow::bail!("{} {name:?} does not exist", kind.as_str());
            }
        }
    }
    let mut deleted = 0;
    for (kind, name) in &targets {
        if *kind == Kind::Node {
            // A Node takes its IPAM state, endpoints, peers and per-node settings with it.
            if args.skip_not_exists && client.get(*kind, name).await?.is_none() {
                continue;
            }
            let r = super::delete_node::delete_node(&client, name).await?;
            println!(
                "Node {name}: released {} address(es), deleted {} block(s), kept {} block(s) \
                 holding other nodes' addresses, deleted {} workload endpoint(s), BGPPeers {:?}, \
                 {:?}",
                r.addresses,
                r.deleted_blocks,
                r.unaffined_blocks,
                r.workload_endpoints,
                r.bgp_peers,
                r.configurations
            );
            deleted += 1;
            continue;
        }
        match client.delete(*kind, name).await {
            Ok(_) => deleted += 1,
            Err(ClientError::NotFound { .. }) if args.skip_not_exists => {}
            Err(e) => return Err(e.into()),
        }
    }
    println!("Successfully deleted {deleted} resource(s)");
    Ok(())
}
