//! `calyx create|apply|replace|validate -f FILE` and `calyx delete`.

use anyhow::Result;
use calyx_datastore::client::{ClientError, WriteMode, WriteOutcome};
use calyx_datastore::policy::PolicyKind;
use calyx_datastore::resources::Kind;
use calyx_datastore::store::Store;

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

/// How many times a batch of policy objects is checked and written when another writer
/// changed what it read in between (each round one of the writers wins, so ten rounds carry
/// ten writers at once into one tier).
const POLICY_WRITE_ATTEMPTS: u32 = 10;

/// Parses and validates every document, then writes them all or none.
pub async fn write(datastore: &DatastoreArgs, args: &FileArgs, action: Action) -> Result<()> {
    let (resources, policies) = super::read_all_documents(&args.filename)?;
    let client = connect::client(datastore).await?;
    let mode = match action {
        Action::Create => WriteMode::Create,
        Action::Replace => WriteMode::Replace,
        Action::Apply | Action::Validate => WriteMode::Apply,
    };
    let count = resources.len() + policies.len();
    // The policy kinds are checked against etcd before anything is written, and written
    // after the other kinds (each group in one transaction guarded by the revisions read).
    let prepared = if policies.is_empty() {
        None
    } else {
        Some(calyx_datastore::policy::store::prepare(client.store(), mode, policies.clone()).await?)
    };
    if action == Action::Validate {
        if !resources.is_empty() {
            client.check_all(mode, &resources).await?;
        }
        println!("Successfully validated {count} resource(s)");
        return Ok(());
    }
    let mut outcomes = if resources.is_empty() {
        Vec::new()
    } else {
        client.write_all(mode, resources).await?
    };
    if let Some(mut prepared) = prepared {
        // Every policy write into a tier moves the tier's revision (so that a concurrent tier
        // delete cannot orphan it): writers into one tier at once conflict, and the loser
        // checks and writes again, as it would after any concurrent change.
        let mut attempt = 1;
        let created = loop {
            match calyx_datastore::policy::store::commit(client.store(), prepared).await {
                Err(calyx_datastore::policy::store::PolicyStoreError::Conflict)
                    if attempt < POLICY_WRITE_ATTEMPTS =>
                {
                    attempt += 1;
                    prepared = calyx_datastore::policy::store::prepare(
                        client.store(),
                        mode,
                        policies.clone(),
                    )
                    .await?;
                }
                other => break other?,
            }
        };
        outcomes.extend(created.into_iter().map(|c| {
            if c {
                WriteOutcome::Created
            } else {
                WriteOutcome::Replaced
            }
        }));
    }
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
    // Policy kinds: (kind, namespace, name).
    let mut policy_targets: Vec<(PolicyKind, String, String)> = Vec::new();
    let targets: Vec<(Kind, String)> = match &args.filename {
        Some(path) => {
            let (resources, policies) = super::read_all_documents(path)?;
            policy_targets.extend(
                policies
                    .iter()
                    .map(|p| (p.kind, p.namespace().to_string(), p.name().to_string())),
            );
            resources
                .iter()
                .map(|r| (r.kind(), r.name().to_string()))
                .collect()
        }
        None => {
            let (Some(kind), Some(name)) = (&args.kind, &args.name) else {
                anyhow::bail!("give -f FILE, or KIND and NAME");
            };
            match PolicyKind::parse(kind) {
                Some(k) => {
                    let ns = args.namespace.clone().unwrap_or_else(|| "default".into());
                    policy_targets.push((k, ns, name.clone()));
                    Vec::new()
                }
                None => vec![(super::parse_kind(kind)?, name.clone())],
            }
        }
    };
    let client = connect::client(datastore).await?;
    // Every target is checked before anything is deleted: a typo in one document of a file
    // deletes nothing.
    if !args.skip_not_exists {
        for (kind, ns, name) in &policy_targets {
            if client.store().get(&kind.key(ns, name)).await?.is_none() {
                anyhow::bail!("{kind} {name:?} does not exist");
            }
        }
        for (kind, name) in &targets {
            if client.get(*kind, name).await?.is_none() {
                anyhow::bail!("{} {name:?} does not exist", kind.as_str());
            }
        }
    }
    // Policies before the tiers they are in (a tier in use cannot be deleted).
    policy_targets.sort_by_key(|(k, _, _)| *k == PolicyKind::Tier);
    let mut policies_deleted = 0;
    for (kind, ns, name) in &policy_targets {
        if calyx_datastore::policy::store::delete(client.store(), *kind, ns, name).await? {
            policies_deleted += 1;
        } else if !args.skip_not_exists {
            anyhow::bail!("{kind} {name:?} does not exist");
        }
    }
    let mut deleted = policies_deleted;
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
