//! Turns the datastore flags into a connected resource client.

use std::time::Duration;

use anyhow::Result;
use calyx_datastore::client::ResourceClient;
use calyx_datastore::store::etcd::{EtcdConfig, EtcdStore};

use crate::args::DatastoreArgs;

/// The etcd configuration the flags describe.
pub fn etcd_config(args: &DatastoreArgs) -> Result<EtcdConfig> {
    let mut config = EtcdConfig::from_endpoints(&args.etcd_endpoints)?;
    config.username = args.etcd_username.clone();
    config.password = args.etcd_password.clone();
    config.ca_cert_file = args.etcd_ca_cert_file.clone();
    config.cert_file = args.etcd_cert_file.clone();
    config.key_file = args.etcd_key_file.clone();
    config.timeout = Some(Duration::from_secs(args.etcd_timeout.max(1)));
    Ok(config)
}

/// Connects to etcd; an unreachable etcd is one clear error within the timeout.
pub async fn client(args: &DatastoreArgs) -> Result<ResourceClient<EtcdStore>> {
    let store = EtcdStore::connect(&etcd_config(args)?).await?;
    Ok(ResourceClient::new(store))
}
