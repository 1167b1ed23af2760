//! ClusterInformation end to end: `calyx version` and `calyx get clusterinformation` against a
//! real etcd (with and without the object, and unreachable), the node daemon creating and
//! updating it as calico-node does and waiting while `datastoreReady` is false, and
//! `calyx node checksystem` on this host.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use calyx_tests::cluster::{Daemon, Underlay};
use calyx_tests::etcd::Etcd;
use calyx_tests::wait_until;
use serde_json::Value;

const CALYX: &str = env!("CARGO_BIN_EXE_calyx");
const KEY: &str = "/calico/resources/v3/projectcalico.org/clusterinformations/default";

fn calyx(endpoint: &str, args: &[&str]) -> Output {
    Command::new(CALYX)
        .args(args)
        .env("ETCD_ENDPOINTS", endpoint)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The commit `build.rs` should have recorded, or `None` when git cannot tell.
fn git_short_head() -> Option<String> {
    let out = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| text(&out.stdout).trim().to_string())
}

/// The two client lines every `calyx version` starts with.
fn assert_client_part(stdout: &str) {
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(concat!("Client Version:    v", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    let commit = lines
        .next()
        .and_then(|l| l.strip_prefix("Git commit:        "))
        .unwrap_or_else(|| panic!("no Git commit line: {stdout}"));
    match git_short_head() {
        Some(head) => assert_eq!(commit, head, "{stdout}"),
        None => assert!(!commit.is_empty(), "{stdout}"),
    }
}

/// As calico-node 3.29 writes it, plus a spec field Calyx does not model.
const CALICO_WRITTEN: &str = r#"{"kind":"ClusterInformation","apiVersion":"projectcalico.org/v3","metadata":{"name":"default","uid":"6d2b7f3e-1111-4222-8333-944455556666","creationTimestamp":"2024-03-01T10:00:00Z"},"spec":{"clusterGUID":"5e0b6a3c8f1d4c2ab7e9d0f1a2b3c4d5","clusterType":"k8s,bgp","calicoVersion":"v3.29.1","datastoreReady":true,"futureKnob":{"level":3}}}"#;

#[test]
fn version_and_get_clusterinformation_follow_calicoctl() {
    let Some(etcd) = Etcd::start("version_and_get_clusterinformation_follow_calicoctl") else {
        return;
    };
    let ep = etcd.endpoint().to_string();

    // Nothing recorded yet: the client part, then calicoctl's error and exit 1.
    let out = calyx(&ep, &["version"]);
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    assert_client_part(&stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "error: Unable to retrieve Cluster Version or Type: ClusterInformation \"default\" does \
         not exist (no node has started against this datastore yet)"
    );
    let out = calyx(&ep, &["get", "clusterinformations"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "NAME   CLUSTERGUID   CLUSTERTYPE   CALICOVERSION   DATASTOREREADY\n"
    );

    // What Calico wrote.
    etcd.etcdctl(&["put", KEY, CALICO_WRITTEN]);
    let out = calyx(&ep, &["version"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_client_part(&stdout);
    let cluster: Vec<&str> = stdout.lines().skip(2).collect();
    assert_eq!(
        cluster,
        ["Cluster Version:   v3.29.1", "Cluster Type:      k8s,bgp"],
        "{stdout}"
    );

    // get: calicoctl's names, columns and formats; unknown fields shown as stored.
    for kind in [
        "clusterinformation",
        "ClusterInformations",
        "clusterinfo",
        "clusterinfos",
    ] {
        let out = calyx(&ep, &["get", kind]);
        assert!(out.status.success(), "{kind}: {}", text(&out.stderr));
        let rows: Vec<Vec<String>> = text(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect();
        assert_eq!(
            rows,
            [
                vec![
                    "NAME",
                    "CLUSTERGUID",
                    "CLUSTERTYPE",
                    "CALICOVERSION",
                    "DATASTOREREADY"
                ],
                vec![
                    "default",
                    "5e0b6a3c8f1d4c2ab7e9d0f1a2b3c4d5",
                    "k8s,bgp",
                    "v3.29.1",
                    "true"
                ]
            ],
            "{kind}"
        );
    }
    let out = calyx(&ep, &["get", "clusterinformation", "default", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let one: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(one["kind"], "ClusterInformation");
    assert_eq!(one["spec"]["futureKnob"]["level"], 3);
    assert!(one["metadata"]["resourceVersion"].is_string(), "{one}");
    let out = calyx(&ep, &["get", "clusterinformations", "-o", "yaml"]);
    let list: Value = serde_yaml_ng::from_slice(&out.stdout).unwrap();
    assert_eq!(list["kind"], "ClusterInformationList");
    assert_eq!(list["items"][0]["spec"]["calicoVersion"], "v3.29.1");
    let out = calyx(&ep, &["get", "clusterinformation", "other"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ClusterInformation \"other\" does not exist"),
        "{}",
        text(&out.stderr)
    );

    // Empty fields read as calicoctl shows them.
    etcd.etcdctl(&[
        "put",
        KEY,
        r#"{"kind":"ClusterInformation","apiVersion":"projectcalico.org/v3","metadata":{"name":"default"},"spec":{"datastoreReady":true}}"#,
    ]);
    let out = calyx(&ep, &["version"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.ends_with("Cluster Version:   unknown\nCluster Type:      unknown\n"),
        "{stdout}"
    );

    // A value that is not a ClusterInformation is one clear error.
    etcd.etcdctl(&["put", KEY, r#"{"kind":"IPPool"}"#]);
    let out = calyx(&ep, &["version"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is not a valid resource: cannot decode ClusterInformation"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn version_with_etcd_unreachable_prints_the_client_part_and_fails() {
    let port = calyx_tests::free_port();
    let started = Instant::now();
    let out = calyx(
        &format!("http://127.0.0.1:{port}"),
        &["version", "--etcd-timeout", "1"],
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert_client_part(&stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "error: Unable to retrieve Cluster Version or Type: datastore unavailable"
        ),
        "{stderr}"
    );
}

/// The ClusterInformation as stored.
fn stored(underlay: &Underlay) -> Option<Value> {
    let out = underlay.etcd().etcdctl(&["get", KEY, "--print-value-only"]);
    serde_json::from_str(out.trim()).ok()
}

/// The IPAM keys of `node` (affinities) and all blocks.
fn ipam_keys(underlay: &Underlay, node: &str) -> String {
    let affinities = underlay.etcd().etcdctl(&[
        "get",
        "--prefix",
        &format!("/calico/ipam/v2/host/{node}/"),
        "--keys-only",
    ]);
    let blocks = underlay.etcd().etcdctl(&[
        "get",
        "--prefix",
        "/calico/ipam/v2/assignment/",
        "--keys-only",
    ]);
    format!("{}{}", affinities.trim(), blocks.trim())
}

#[test]
fn daemon_creates_cluster_information() {
    let test = "daemon_creates_cluster_information";
    let t = format!("cxk{}", std::process::id() % 10_000);
    let Some(underlay) = Underlay::new(test, &t, "10.81.1") else {
        return;
    };
    let node = underlay.add_node(1);
    let daemon = Daemon::start(
        &underlay,
        &node,
        &[
            ("CALICO_NETWORKING_BACKEND", "vxlan"),
            ("CALICO_IPV4POOL_CIDR", "10.245.0.0/16"),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(30), || stored(&underlay).is_some()),
        "no ClusterInformation written:\n{}",
        daemon.log()
    );
    let ci = stored(&underlay).unwrap();
    assert_eq!(ci["kind"], "ClusterInformation");
    assert_eq!(ci["apiVersion"], "projectcalico.org/v3");
    assert_eq!(ci["metadata"]["name"], "default");
    assert!(ci["metadata"]["uid"].is_string(), "{ci}");
    assert!(ci["metadata"]["creationTimestamp"].is_string(), "{ci}");
    assert_eq!(
        ci["spec"]["calicoVersion"],
        concat!("v", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(ci["spec"]["datastoreReady"], true);
    let guid = ci["spec"]["clusterGUID"].as_str().unwrap_or_default();
    assert_eq!(guid.len(), 32, "{ci}");
    assert!(guid.chars().all(|c| c.is_ascii_hexdigit()), "{ci}");
    // No CLUSTER_TYPE: none recorded, as calico-node does.
    assert!(ci["spec"].get("clusterType").is_none(), "{ci}");

    let out = underlay.calyx(&["version"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).ends_with(concat!(
            "Cluster Version:   v",
            env!("CARGO_PKG_VERSION"),
            "\nCluster Type:      unknown\n"
        )),
        "{}",
        text(&out.stdout)
    );
    // Ready: the block is claimed without waiting.
    assert!(
        wait_until(Duration::from_secs(20), || ipam_keys(&underlay, &node.name)
            .contains("/calico/ipam/v2/host/node1/ipv4/block/")),
        "{}",
        daemon.log()
    );
    assert!(
        !daemon.log().contains("datastore not ready"),
        "{}",
        daemon.log()
    );
}

#[test]
fn daemon_keeps_unknown_fields_and_waits_while_datastore_not_ready() {
    let test = "daemon_keeps_unknown_fields_and_waits_while_datastore_not_ready";
    let t = format!("cxr{}", std::process::id() % 10_000);
    let Some(underlay) = Underlay::new(test, &t, "10.81.2") else {
        return;
    };
    // A migration in progress, recorded by an older Calico with a field Calyx does not model.
    let not_ready = CALICO_WRITTEN
        .replace("\"datastoreReady\":true", "\"datastoreReady\":false")
        .replace("v3.29.1", "v3.20.0")
        .replace("\"k8s,bgp\"", "\"k8s\"");
    underlay.etcd().etcdctl(&["put", KEY, &not_ready]);
    let node = underlay.add_node(1);
    let daemon = Daemon::start(
        &underlay,
        &node,
        &[
            ("CALICO_NETWORKING_BACKEND", "vxlan"),
            ("CALICO_IPV4POOL_CIDR", "10.246.0.0/16"),
            ("CALICO_IPV4POOL_VXLAN", "Always"),
            ("CLUSTER_TYPE", "k8s,bgp"),
        ],
    );
    let version = concat!("v", env!("CARGO_PKG_VERSION"));
    assert!(
        wait_until(Duration::from_secs(30), || stored(&underlay)
            .is_some_and(|ci| ci["spec"]["calicoVersion"] == version)),
        "calicoVersion not updated:\n{}",
        daemon.log()
    );
    let ci = stored(&underlay).unwrap();
    assert_eq!(ci["spec"]["futureKnob"]["level"], 3, "{ci}");
    assert_eq!(
        ci["spec"]["clusterGUID"],
        "5e0b6a3c8f1d4c2ab7e9d0f1a2b3c4d5"
    );
    assert_eq!(ci["spec"]["clusterType"], "k8s,bgp", "{ci}");
    assert_eq!(
        ci["spec"]["datastoreReady"], false,
        "an explicit false stays"
    );
    assert_eq!(
        ci["metadata"]["uid"],
        "6d2b7f3e-1111-4222-8333-944455556666"
    );

    // Waiting: says so, claims nothing, assigns no tunnel address.
    assert!(
        wait_until(Duration::from_secs(10), || daemon
            .log()
            .contains("datastore not ready")),
        "{}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(ipam_keys(&underlay, &node.name), "", "{}", daemon.log());
    let node_json: Value = serde_json::from_slice(
        &underlay
            .calyx(&["get", "node", "node1", "-o", "json"])
            .stdout,
    )
    .unwrap();
    assert!(
        node_json["spec"].get("ipv4VXLANTunnelAddr").is_none(),
        "{node_json}"
    );

    // Ready again: the block and the tunnel address follow.
    let mut ready = stored(&underlay).unwrap();
    ready["spec"]["datastoreReady"] = Value::Bool(true);
    underlay
        .etcd()
        .etcdctl(&["put", KEY, &serde_json::to_string(&ready).unwrap()]);
    assert!(
        wait_until(Duration::from_secs(20), || ipam_keys(&underlay, &node.name)
            .contains("/calico/ipam/v2/host/node1/ipv4/block/10.246.")),
        "no block after datastoreReady: true:\n{}",
        daemon.log()
    );
    assert!(
        wait_until(Duration::from_secs(20), || {
            let out = underlay.calyx(&["get", "node", "node1", "-o", "json"]);
            serde_json::from_slice::<Value>(&out.stdout)
                .is_ok_and(|n| n["spec"]["ipv4VXLANTunnelAddr"].is_string())
        }),
        "no tunnel address:\n{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("datastore ready again"),
        "{}",
        daemon.log()
    );
    // The unknown field survived every write.
    assert_eq!(stored(&underlay).unwrap()["spec"]["futureKnob"]["level"], 3);
}

/// What the kernel's build configuration says about `option`, when it can be read.
fn kernel_config(option: &str) -> Option<bool> {
    let out = Command::new("zcat").arg("/proc/config.gz").output().ok()?;
    let config = text(&out.stdout);
    config.lines().find_map(|l| {
        if l == format!("# {option} is not set") {
            Some(false)
        } else {
            l.strip_prefix(option)
                .and_then(|r| r.strip_prefix('='))
                .map(|v| v == "y" || v == "m")
        }
    })
}

#[test]
fn checksystem_prints_one_line_per_check() {
    let out = Command::new(CALYX)
        .args(["node", "checksystem"])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let names = [
        "Kernel: VXLAN",
        "Kernel: IPIP",
        "Kernel: nftables",
        "Kernel: TCP MD5 signatures",
        "Kernel: IPv6",
        "Forwarding: IPv4",
        "Forwarding: IPv6",
        "Capability: CAP_NET_ADMIN",
        "Capability: CAP_NET_RAW",
        "Capability: CAP_SYS_ADMIN",
    ];
    assert_eq!(lines.len(), names.len() + 1, "{stdout}");
    for (line, name) in lines.iter().zip(names) {
        let rest = line
            .strip_prefix(name)
            .unwrap_or_else(|| panic!("{line:?} is not {name:?}"))
            .trim_start();
        assert!(
            rest == "OK"
                || rest.starts_with("WARNING, missing (used for ")
                || rest.starts_with("MISSING (required for "),
            "{line}"
        );
    }
    let line = |name: &str| lines.iter().find(|l| l.starts_with(name)).copied().unwrap();
    // This kernel's IPIP and VXLAN, as its build configuration says.
    let ipip_built = kernel_config("CONFIG_NET_IPIP");
    let ipip_loaded = std::path::Path::new("/sys/module/ipip").exists();
    if ipip_built == Some(false) && !ipip_loaded {
        assert!(
            line("Kernel: IPIP").contains("WARNING, missing"),
            "{stdout}"
        );
    }
    if kernel_config("CONFIG_VXLAN") == Some(true) {
        assert!(line("Kernel: VXLAN").ends_with("OK"), "{stdout}");
    }
    // The verdict and the exit code agree with the lines.
    let required_missing = lines.iter().any(|l| l.contains("MISSING (required for "));
    assert_eq!(out.status.success(), !required_missing, "{stdout}");
    assert_eq!(
        lines
            .last()
            .unwrap()
            .starts_with("System meets the requirements"),
        !required_missing,
        "{stdout}"
    );
    // Nothing left behind on the host (the probe's namespace is anonymous and went away with
    // its thread; other tests' links and namespaces come and go, so only ours are looked for).
    let links_after = text(
        &Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(!links_after.contains("calyxprobe"), "{links_after}");
}
