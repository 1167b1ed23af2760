//! Pods made by a real container runtime: on two nodes running `calyx node run` (BGP mode),
//! podman with its CNI network backend calls the CNI plugins through libcni from the CNI
//! directories that `calyx-install-cni` filled from the ConfigMap's template (calyx, its IPAM
//! plugin, and portmap chained as in Calico's manifests), as kubelet's runtime does. The pods
//! (a scratch image holding a static busybox) get addresses from Calyx IPAM, reach each other
//! across nodes, a hostPort works through portmap, and removing a pod (the runtime's CNI DEL)
//! leaves no veth, no address and no WorkloadEndpoint behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use calyx_tests::cluster::{Cluster, NodeNs, Underlay};
use calyx_tests::podman::{busybox_image, Podman, BINARIES};
use calyx_tests::wait_until;
use serde_json::Value;

const WEPS: &str = "/calico/resources/v3/projectcalico.org/workloadendpoints/";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The ConfigMap's `cni_network_config` template, read from the manifest itself.
fn cni_template() -> String {
    let text = std::fs::read_to_string(repo().join("deploy/kubernetes/configmap.yaml")).unwrap();
    let cm: Value = serde_yaml_ng::from_str(&text).unwrap();
    cm["data"]["cni_network_config"]
        .as_str()
        .expect("cni_network_config")
        .to_string()
}

/// A node's host directories, filled by `deploy/install-cni.sh` as the initContainer fills
/// them: (CNI bin dir, CNI config dir).
fn install_cni(root: &Path, underlay: &Underlay, node: &NodeNs) -> (PathBuf, PathBuf) {
    let image_bin = root.join("image-bin");
    std::fs::create_dir_all(&image_bin).unwrap();
    for (src, name) in [
        (calyx_tests::workspace_binary("calyx-cni"), "calyx-cni"),
        (calyx_tests::workspace_binary("calyx-ipam"), "calyx-ipam"),
        (PathBuf::from("/usr/lib/cni/portmap"), "portmap"),
    ] {
        std::fs::copy(&src, image_bin.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    }
    let (bin, net) = (root.join("opt/cni/bin"), root.join("etc/cni/net.d"));
    let out = Command::new("bash")
        .arg(repo().join("deploy/install-cni.sh"))
        .env("SOURCE_DIR", &image_bin)
        .env("CNI_BIN_DIR", &bin)
        .env("CNI_NET_DIR", &net)
        .env("HOST_CNI_NET_DIR", &net)
        .env("CNI_NETWORK_CONFIG", cni_template())
        .env("KUBERNETES_NODE_NAME", &node.name)
        .env("ETCD_ENDPOINTS", underlay.etcd_endpoint())
        .env("CNI_MTU", "1440")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install-cni: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (bin, net)
}

/// The address podman's CNI result gave the container on `k8s-pod-network`.
fn pod_ip(podman: &Podman, name: &str) -> String {
    let out = podman.ok(&["inspect", name]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["NetworkSettings"]["Networks"]["k8s-pod-network"]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn endpoints_of(c: &Cluster, node: &str) -> Vec<Value> {
    c.underlay
        .etcd()
        .etcdctl(&["get", "--prefix", "--print-value-only", WEPS])
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|w| w["spec"]["node"] == node)
        .collect()
}

#[test]
fn podman_pods_get_calyx_addresses_reach_each_other_and_release_on_removal() {
    let test = "podman_pods_get_calyx_addresses_reach_each_other_and_release_on_removal";
    if !calyx_tests::require_binaries(test, &BINARIES) {
        return;
    }
    if !Path::new("/usr/lib/cni/portmap").is_file() {
        eprintln!("SKIPPED {test}: /usr/lib/cni/portmap missing (containernetworking-plugins)");
        return;
    }
    let t = format!("cxrt{}", std::process::id() % 10_000);
    let env = [
        ("CALICO_NETWORKING_BACKEND", "bird"),
        ("CALICO_IPV4POOL_CIDR", "10.177.0.0/16"),
    ];
    let Some(c) = Cluster::start(test, &t, "10.77.1", 2, &env, |_| {}) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut engines = Vec::new();
    for node in &c.nodes {
        let root = dir.path().join(&node.name);
        let (bin, net) = install_cni(&root, &c.underlay, node);
        assert!(bin.join("calyx").is_file() && bin.join("portmap").is_file());
        engines.push(Podman::new(&root, Some(node.ns.name()), &net, &bin));
    }
    let image = format!("localhost/calyx-test-busybox:{t}");
    if busybox_image(&engines[0], dir.path(), &image).is_none() {
        return;
    }

    // Pod a on node1 serves HTTP on 80, published as hostPort 8080; pod b on node2.
    let serve =
        "mkdir -p /www && echo hello-from-a > /www/index.html && exec httpd -f -p 80 -h /www";
    let (a, b) = (format!("{t}-a"), format!("{t}-b"));
    engines[0].track_container(&a);
    engines[0].ok(&[
        "run",
        "-d",
        "--name",
        &a,
        "--network",
        "k8s-pod-network",
        "-p",
        "8080:80",
        &image,
        "/bin/sh",
        "-c",
        serve,
    ]);
    engines[1].track_container(&b);
    engines[1].ok(&[
        "run",
        "-d",
        "--name",
        &b,
        "--network",
        "k8s-pod-network",
        &image,
        "/bin/sleep",
        "3600",
    ]);
    let (ip_a, ip_b) = (pod_ip(&engines[0], &a), pod_ip(&engines[1], &b));
    for ip in [&ip_a, &ip_b] {
        assert!(ip.starts_with("10.177."), "{ip_a} {ip_b}");
        let info = c.calyx_ok(&["ipam", "show", "--ip", ip]);
        assert!(info.contains("in use"), "{info}");
    }
    // Each pod is recorded as the runtime started it (no Kubernetes arguments: orchestrator cni).
    for (node, ip) in [("node1", &ip_a), ("node2", &ip_b)] {
        let weps = endpoints_of(&c, node);
        assert_eq!(weps.len(), 1, "{weps:?}");
        assert_eq!(
            weps[0]["spec"]["ipNetworks"][0],
            format!("{ip}/32"),
            "{weps:?}"
        );
    }

    // Across nodes, both ways: ICMP, then HTTP to the pod, then to the hostPort on node1.
    let reach = wait_until(Duration::from_secs(60), || {
        engines[1]
            .run(&["exec", &b, "ping", "-c", "1", "-W", "2", &ip_a])
            .status
            .success()
    });
    assert!(
        reach,
        "pod b cannot reach pod a\n{}\n{}",
        c.routes(),
        c.logs()
    );
    assert!(engines[0]
        .run(&["exec", &a, "ping", "-c", "1", "-W", "2", &ip_b])
        .status
        .success());
    let page = engines[1].ok(&[
        "exec",
        &b,
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{ip_a}/"),
    ]);
    assert_eq!(page.trim(), "hello-from-a");
    let host_port = format!("http://{}:8080/", c.nodes[0].ip);
    let mut page = String::new();
    let published = wait_until(Duration::from_secs(30), || {
        let out = engines[1].run(&[
            "exec", &b, "timeout", "5", "wget", "-q", "-O", "-", &host_port,
        ]);
        page = String::from_utf8_lossy(&out.stdout).trim().to_string();
        out.status.success()
    });
    assert!(
        published && page == "hello-from-a",
        "hostPort: {page:?}\n{}",
        c.nodes[0].ns.exec(&["nft", "list", "table", "ip", "nat"])
    );

    // Removing pod a: the runtime's DEL releases everything.
    let veth = endpoints_of(&c, "node1")[0]["spec"]["interfaceName"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(c.nodes[0].ns.try_exec(&["ip", "link", "show", &veth]));
    let out = engines[0].remove(&a);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !c.nodes[0].ns.try_exec(&["ip", "link", "show", &veth]),
        "{veth} left behind"
    );
    let info = c.calyx_ok(&["ipam", "show", "--ip", &ip_a]);
    assert!(info.contains("not assigned"), "{info}");
    assert!(endpoints_of(&c, "node1").is_empty());
    // The hostPort's DNAT went with it: nothing answers on 8080 any more.
    let out = engines[1].run(&[
        "exec", &b, "timeout", "5", "wget", "-q", "-O", "-", &host_port,
    ]);
    assert!(!out.status.success());
}
