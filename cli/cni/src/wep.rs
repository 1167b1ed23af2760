//! The WorkloadEndpoint `calyx-cni` records for every pod, exactly as Calico's CNI plugin does
//! in etcd mode (`cni-plugin/pkg/k8s/k8s.go`, `internal/pkg/utils.GetIdentifiers`), so that
//! calico-kube-controllers (pod label sync, clean-up after a deleted node), `calicoctl get
//! workloadendpoints` and Calyx's own garbage collection see every workload.
//!
//! - With kubelet's `CNI_ARGS` (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`): orchestrator `k8s`, name
//!   `<node>-k8s-<pod>-<iface>` in the pod's namespace, profile `kns.<namespace>`.
//! - Without them: orchestrator `cni`, name `<node>-cni-<containerID>-<iface>` in namespace
//!   `default`, profile = the network's name.
//!
//! Either way the labels `projectcalico.org/namespace` and `projectcalico.org/orchestrator` are
//! set (libcalico-go adds them on every write), `ipNetworks` holds the addresses as /32 or /128,
//! `interfaceName` the host end of the veth and `mac` the pod end's MAC. DEL deletes the
//! endpoint only when it records the same container ID (a DEL for an old sandbox of a pod
//! must not remove the record of its current one).

use std::collections::BTreeMap;

use calyx_datastore::client::{ClientError, ResourceClient};
use calyx_datastore::resources::{
    workload_endpoint_name, ObjectMeta, WorkloadEndpoint, WorkloadEndpointSpec, LABEL_NAMESPACE,
    LABEL_ORCHESTRATOR,
};
use calyx_datastore::store::{Store, StoreError};
use calyx_datastore::wep_client::WepDeleted;
use ipnet::IpNet;

use calyx_datastore::store::etcd::{EtcdConfig, EtcdStore};
use std::path::PathBuf;

use crate::ipam_plugin::{codes, parse_request, retry_until, CniError, NO_ETCD};

/// Who the endpoint belongs to, from the CNI environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WepIds {
    /// `k8s` or `cni`.
    pub orchestrator: &'static str,
    /// The namespace the endpoint is stored in.
    pub namespace: String,
    /// The endpoint's name.
    pub name: String,
    /// The pod's name (`k8s` only).
    pub pod: String,
    /// The node.
    pub node: String,
    /// The interface in the pod (`CNI_IFNAME`).
    pub endpoint: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
}

/// Works out the endpoint's identity as Calico's `GetIdentifiers` does: Kubernetes when both
/// `K8S_POD_NAMESPACE` and `K8S_POD_NAME` are in `CNI_ARGS`, plain CNI otherwise.
pub fn identifiers(
    node: &str,
    container_id: &str,
    ifname: &str,
    cni_args: &BTreeMap<String, String>,
) -> Result<WepIds, CniError> {
    let arg = |k: &str| cni_args.get(k).filter(|v| !v.is_empty());
    let bad = |e: calyx_datastore::resources::WepNameError| {
        CniError::new(
            codes::INVALID_CONFIG,
            "cannot name the WorkloadEndpoint",
            e.to_string(),
        )
    };
    match (arg("K8S_POD_NAMESPACE"), arg("K8S_POD_NAME")) {
        (Some(ns), Some(pod)) => Ok(WepIds {
            orchestrator: "k8s",
            namespace: ns.clone(),
            name: workload_endpoint_name(&[
                ("node", node),
                ("orchestrator", "k8s"),
                ("pod", pod),
                ("endpoint", ifname),
            ])
            .map_err(bad)?,
            pod: pod.clone(),
            node: node.to_string(),
            endpoint: ifname.to_string(),
            container_id: container_id.to_string(),
        }),
        _ => Ok(WepIds {
            orchestrator: "cni",
            namespace: "default".to_string(),
            name: workload_endpoint_name(&[
                ("node", node),
                ("orchestrator", "cni"),
                ("containerID", container_id),
                ("endpoint", ifname),
            ])
            .map_err(bad)?,
            pod: String::new(),
            node: node.to_string(),
            endpoint: ifname.to_string(),
            container_id: container_id.to_string(),
        }),
    }
}

/// The endpoint an ADD records: `ips` are the pod's addresses, `host_if` the host end of the
/// veth, `pod_mac` the pod end's MAC, `network` the CNI network's name.
pub fn endpoint(
    ids: &WepIds,
    ips: &[IpNet],
    host_if: &str,
    pod_mac: &str,
    network: &str,
) -> WorkloadEndpoint {
    let mut metadata = ObjectMeta::named(ids.name.clone());
    metadata.namespace = ids.namespace.clone();
    metadata
        .labels
        .insert(LABEL_NAMESPACE.into(), ids.namespace.clone());
    metadata
        .labels
        .insert(LABEL_ORCHESTRATOR.into(), ids.orchestrator.into());
    let profiles = if ids.orchestrator == "k8s" {
        vec![format!("kns.{}", ids.namespace)]
    } else {
        vec![network.to_string()]
    };
    WorkloadEndpoint {
        metadata,
        spec: WorkloadEndpointSpec {
            orchestrator: ids.orchestrator.into(),
            node: ids.node.clone(),
            container_id: ids.container_id.clone(),
            pod: ids.pod.clone(),
            endpoint: ids.endpoint.clone(),
            // Host prefixes, as Calico's PopulateEndpointNets writes them.
            ip_networks: ips
                .iter()
                .map(|ip| IpNet::from(ip.addr()).to_string())
                .collect(),
            profiles,
            interface_name: host_if.into(),
            mac: pod_mac.to_ascii_lowercase(),
            ..WorkloadEndpointSpec::default()
        },
        extra: serde_json::Map::new(),
    }
}

/// A datastore error as a CNI error: retried within the deadline when etcd does not answer.
fn cni_error(e: ClientError) -> CniError {
    let code = match &e {
        ClientError::Store(StoreError::Unavailable { .. }) | ClientError::WepConflict { .. } => {
            codes::TRY_AGAIN_LATER
        }
        _ => codes::IPAM_FAILURE,
    };
    CniError::new(code, "cannot write the WorkloadEndpoint", e.to_string())
}

/// Writes (creates or updates) the endpoint.
pub async fn write<S: Store>(
    client: &ResourceClient<S>,
    wep: &WorkloadEndpoint,
) -> Result<(), CniError> {
    client
        .put_workload_endpoint(wep)
        .await
        .map(|_| ())
        .map_err(cni_error)
}

/// Deletes the endpoint if it records `ids.container_id`.
pub async fn delete<S: Store>(
    client: &ResourceClient<S>,
    ids: &WepIds,
) -> Result<WepDeleted, CniError> {
    client
        .delete_workload_endpoint(&ids.namespace, &ids.name, &ids.container_id)
        .await
        .map_err(cni_error)
}

/// Where `calyx-cni` records endpoints: the etcd and node named by the network configuration
/// (or `ETCD_*`, `NODENAME`), as for `calyx-ipam`, and the command's deadline.
pub struct Datastore {
    /// The node name.
    pub node: String,
    config: EtcdConfig,
    /// The end of this command's time (from its start), shared with the IPAM plugin's
    /// budget so the whole command stays within kubelet's patience.
    deadline: std::time::Instant,
}

impl Datastore {
    /// The datastore of this command; `None` when no etcd is configured at all (the plugin
    /// then only wires, as with an IPAM plugin that needs no datastore).
    pub fn from_request(
        env: &dyn Fn(&str) -> Option<String>,
        stdin: &[u8],
    ) -> Result<Option<Datastore>, CniError> {
        let req = match parse_request(env, stdin) {
            Ok(req) => req,
            Err(e) if e.msg == NO_ETCD => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = |e: StoreError| {
            CniError::new(codes::INVALID_CONFIG, "bad etcd settings", e.to_string())
        };
        let mut config = EtcdConfig::from_endpoints(&req.etcd_endpoints).map_err(bad)?;
        let (ca, cert, key) = &req.etcd_tls;
        config.ca_cert_file = ca.as_ref().map(PathBuf::from);
        config.cert_file = cert.as_ref().map(PathBuf::from);
        config.key_file = key.as_ref().map(PathBuf::from);
        let budget = crate::ipam_plugin::deadline(env("CALYX_CNI_TIMEOUT"))?;
        Ok(Some(Datastore {
            node: req.node,
            config,
            deadline: std::time::Instant::now() + budget,
        }))
    }

    /// Runs `op` on a client, retrying a datastore that does not answer within the deadline
    /// (a fresh connection per attempt, so a dead member is left behind).
    fn run<T>(
        &self,
        op: impl AsyncFn(&ResourceClient<EtcdStore>) -> Result<T, CniError>,
    ) -> Result<T, CniError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                CniError::new(codes::IO_FAILURE, "cannot start the runtime", e.to_string())
            })?;
        rt.block_on(async {
            // At least one attempt, even when the IPAM plugin used up the budget.
            let deadline = tokio::time::Instant::from_std(self.deadline)
                .max(tokio::time::Instant::now() + std::time::Duration::from_secs(1));
            retry_until(deadline, || async {
                let store = EtcdStore::connect(&self.config)
                    .await
                    .map_err(|e| CniError::from(calyx_ipam::IpamError::from(e)))?;
                op(&ResourceClient::new(store)).await
            })
            .await
        })
    }

    /// Writes the endpoint an ADD made.
    pub fn write(&self, wep: &WorkloadEndpoint) -> Result<(), CniError> {
        self.run(async |client| write(client, wep).await)
    }

    /// Deletes the endpoint of `ids` if it is still this container's.
    pub fn delete(&self, ids: &WepIds) -> Result<WepDeleted, CniError> {
        self.run(async |client| delete(client, ids).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam_plugin::parse_cni_args;

    #[test]
    fn kubernetes_and_plain_cni_identities() {
        let args = parse_cni_args(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-5d78c9869d-abcde;K8S_POD_INFRA_CONTAINER_ID=c1",
        );
        let ids = identifiers("node-1", "c1", "eth0", &args).unwrap();
        assert_eq!(ids.orchestrator, "k8s");
        assert_eq!(ids.namespace, "kube-system");
        assert_eq!(ids.name, "node--1-k8s-coredns--5d78c9869d--abcde-eth0");
        let ip: IpNet = "10.244.1.5/26".parse().unwrap();
        let w = endpoint(
            &ids,
            &[ip],
            "cali0123456789a",
            "AA:BB:CC:DD:EE:FF",
            "k8s-pod-network",
        );
        let v = serde_json::to_value(&w).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
                "metadata": {"name": "node--1-k8s-coredns--5d78c9869d--abcde-eth0",
                    "namespace": "kube-system",
                    "labels": {"projectcalico.org/namespace": "kube-system",
                               "projectcalico.org/orchestrator": "k8s"}},
                "spec": {"orchestrator": "k8s", "node": "node-1", "containerID": "c1",
                    "pod": "coredns-5d78c9869d-abcde", "endpoint": "eth0",
                    "ipNetworks": ["10.244.1.5/32"], "profiles": ["kns.kube-system"],
                    "interfaceName": "cali0123456789a", "mac": "aa:bb:cc:dd:ee:ff"}})
        );
        let ids = identifiers("n1", "abc", "eth0", &parse_cni_args("IgnoreUnknown=1")).unwrap();
        assert_eq!(ids.orchestrator, "cni");
        assert_eq!(ids.namespace, "default");
        assert_eq!(ids.name, "n1-cni-abc-eth0");
        let w = endpoint(&ids, &[], "calix", "aa:aa:aa:aa:aa:aa", "net1");
        assert_eq!(w.spec.profiles, ["net1"]);
        assert_eq!(w.metadata.labels[LABEL_ORCHESTRATOR], "cni");
        assert!(identifiers("n1", "c-", "eth0", &BTreeMap::new()).is_err());
    }
}
