//! `calyx version`: the client's version and build commit, then the cluster's version and type
//! from `clusterinformations/default`, in calicoctl's layout.

use anyhow::{Context, Result};

use crate::args::DatastoreArgs;
use crate::connect;

/// This client's version, as calicoctl writes its own (`v3.29.1`).
pub const CLIENT_VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// The commit the binary was built from (`unknown` when built without git; see `build.rs`).
pub const GIT_COMMIT: &str = env!("CALYX_GIT_COMMIT");

/// Prints the client part, then the cluster part. Like calicoctl, a cluster part that cannot
/// be read (etcd unreachable, no ClusterInformation yet) is an error after the client part:
/// `Unable to retrieve Cluster Version or Type: ...` and exit 1.
pub async fn run(datastore: &DatastoreArgs) -> Result<()> {
    println!("Client Version:    {CLIENT_VERSION}");
    println!("Git commit:        {GIT_COMMIT}");
    let (version, cluster_type) = cluster(datastore)
        .await
        .context("Unable to retrieve Cluster Version or Type")?;
    println!("Cluster Version:   {version}");
    println!("Cluster Type:      {cluster_type}");
    Ok(())
}

/// The cluster's version and type, `unknown` for an empty field (as calicoctl shows them).
async fn cluster(datastore: &DatastoreArgs) -> Result<(String, String)> {
    let client = connect::client(datastore).await?;
    let Some(ci) = client.cluster_information().await? else {
        anyhow::bail!(
            "ClusterInformation \"default\" does not exist (no node has started against this \
             datastore yet)"
        );
    };
    let or_unknown = |s: &str| {
        if s.is_empty() {
            "unknown".to_string()
        } else {
            s.to_string()
        }
    };
    Ok((
        or_unknown(&ci.spec.calico_version),
        or_unknown(&ci.spec.cluster_type),
    ))
}
