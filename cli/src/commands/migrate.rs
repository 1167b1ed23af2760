//! `calyx datastore migrate lock|unlock` and `calyx ipam split`: the migration steps of
//! calicoctl, over `calyx_datastore::migration`.

use anyhow::{Context, Result};
use calyx_datastore::migration::PoolRef;

use crate::args::{DatastoreArgs, MigrateCommand};
use crate::connect;

/// `calyx datastore migrate lock|unlock`.
pub async fn run(datastore: &DatastoreArgs, command: MigrateCommand) -> Result<()> {
    let client = connect::client(datastore).await?;
    let locked = matches!(command, MigrateCommand::Lock);
    client.set_datastore_locked(locked).await.with_context(|| {
        format!(
            "error updating ClusterInformation for {}",
            if locked { "locking" } else { "unlocking" }
        )
    })?;
    println!("Datastore {}.", if locked { "locked" } else { "unlocked" });
    Ok(())
}

/// `calyx ipam split NUMBER --cidr CIDR | --name NAME`.
pub async fn split(
    datastore: &DatastoreArgs,
    number: u32,
    cidr: Option<String>,
    name: Option<String>,
) -> Result<()> {
    // Checked before connecting: bad input is one line and touches nothing.
    let which = match (cidr, name) {
        (_, Some(name)) => PoolRef::Name(name),
        (Some(cidr), None) => PoolRef::Cidr(
            cidr.trim()
                .parse()
                .with_context(|| format!("--cidr {cidr:?} is not a CIDR"))?,
        ),
        (None, None) => anyhow::bail!(
            "no name or CIDR provided. Provide --name or --cidr to denote the IP pool to split"
        ),
    };
    calyx_datastore::migration::check_parts(number)?;
    let client = connect::client(datastore).await?;
    let parts = client.split_pool(&which, number).await?;
    let old = match &which {
        PoolRef::Name(n) => n.clone(),
        PoolRef::Cidr(c) => c.to_string(),
    };
    println!(
        "IP Pool {old} was successfully split into {} smaller pools.",
        parts.len()
    );
    for p in &parts {
        println!("Created {} with CIDR {}.", p.metadata.name, p.spec.cidr);
    }
    println!("Unlock the datastore with `calyx datastore migrate unlock` when done.");
    Ok(())
}
