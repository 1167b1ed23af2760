//! Datastore migration steps against a real etcd, as a Calico user runs them with calicoctl:
//! `calyx datastore migrate lock|unlock`, the CNI IPAM plugin refusing ADD and DEL while
//! locked, `calyx ipam split` (only while locked, nothing written on bad input, allocations
//! kept), and `calyx delete workloadendpoint`.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use calyx_tests::cli::{calyx, dump, fails, ok};
use calyx_tests::etcd::Etcd;
use serde_json::Value;

const POOLS: &str = "/calico/resources/v3/projectcalico.org/ippools/";
const WEPS: &str = "/calico/resources/v3/projectcalico.org/workloadendpoints/";

/// Runs the `calyx-ipam` CNI plugin as a runtime does; returns (success, stdout JSON).
fn ipam_plugin(
    plugin: &std::path::Path,
    etcd: &Etcd,
    command: &str,
    container: &str,
) -> (bool, Value) {
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"calyx","nodename":"node1","etcd_endpoints":"{}","ipam":{{"type":"calyx-ipam"}}}}"#,
        etcd.endpoint()
    );
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", "/var/run/netns/none")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/nonexistent")
        .env("CALYX_CNI_TIMEOUT", "20")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let value = if out.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).unwrap()
    };
    (out.status.success(), value)
}

fn address(result: &Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn lock_split_unlock_keeps_every_allocation() {
    let Some(etcd) = Etcd::start("lock_split_unlock_keeps_every_allocation") else {
        return;
    };
    let plugin = calyx_tests::workspace_binary("calyx-ipam");
    if !plugin.is_file() {
        eprintln!("SKIPPED: calyx-ipam is not built (tests/run.sh builds it)");
        return;
    }
    let setup = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p, labels: {team: net}}\nspec: {cidr: 10.90.0.0/24, blockSize: 28, vxlanMode: Always, natOutgoing: true}\n---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: node1}\nspec: {bgp: {ipv4Address: 10.0.0.1/24}}\n";
    assert!(calyx(&etcd, &["apply", "-f", "-"], Some(setup))
        .status
        .success());
    let (added, first) = ipam_plugin(&plugin, &etcd, "ADD", "first");
    assert!(added, "{first}");
    let first_ip = address(&first);

    // Not locked: split refused, nothing written.
    let before = dump(&etcd);
    let line = fails(&etcd, &["ipam", "split", "4", "--name", "p"], None);
    assert!(line.contains("datastore is not locked"), "{line}");
    assert_eq!(dump(&etcd), before);

    assert!(ok(&etcd, &["datastore", "migrate", "lock"]).contains("Datastore locked."));
    let locked = dump(&etcd);

    // Locked: the CNI plugin refuses ADD and DEL at once, as Calico's does, and writes nothing.
    let (added, refused) = ipam_plugin(&plugin, &etcd, "ADD", "second");
    assert!(!added);
    assert_eq!(refused["code"], 103, "{refused}");
    assert!(
        refused["msg"].as_str().unwrap().contains("not ready"),
        "{refused}"
    );
    let (deleted, refused) = ipam_plugin(&plugin, &etcd, "DEL", "first");
    assert!(!deleted);
    assert_eq!(refused["code"], 103, "{refused}");
    assert_eq!(dump(&etcd), locked);

    // Bad splits: one line naming the problem, nothing written.
    for (args, want) in [
        (vec!["ipam", "split", "3", "--name", "p"], "power of 2"),
        (
            vec!["ipam", "split", "4", "--name", "nope"],
            "unable to find",
        ),
        (
            vec!["ipam", "split", "4", "--cidr", "10.90.0.0/99"],
            "--cidr",
        ),
        // /29 parts cannot hold the pool's /28 blocks.
        (vec!["ipam", "split", "32", "--name", "p"], "spec.blockSize"),
        (vec!["ipam", "split", "4"], "--cidr"),
    ] {
        let line = fails(&etcd, &args, None);
        assert!(line.contains(want), "{args:?}: {line}");
        assert_eq!(dump(&etcd), locked, "{args:?} wrote something");
    }

    let out = ok(&etcd, &["ipam", "split", "4", "--cidr", "10.90.0.0/24"]);
    assert!(out.contains("split into 4 smaller pools"), "{out}");
    let pools = ok(&etcd, &["get", "ippools", "-o", "json"]);
    let pools: Value = serde_json::from_str(&pools).unwrap();
    let got: Vec<(String, String)> = pools["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["spec"]["cidr"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("split-p-0", "10.90.0.0/26"),
            ("split-p-1", "10.90.0.64/26"),
            ("split-p-2", "10.90.0.128/26"),
            ("split-p-3", "10.90.0.192/26"),
        ]
        .map(|(n, c)| (n.to_string(), c.to_string()))
    );
    for p in pools["items"].as_array().unwrap() {
        assert_eq!(p["spec"]["vxlanMode"], "Always", "{p}");
        assert_eq!(p["spec"]["natOutgoing"], true, "{p}");
        assert_eq!(p["metadata"]["labels"]["team"], "net", "{p}");
        assert!(p["spec"]["disabled"] != true, "{p}");
    }
    assert!(etcd
        .etcdctl(&["get", "--prefix", "--keys-only", POOLS])
        .lines()
        .all(|k| !k.ends_with("/p")));

    assert!(ok(&etcd, &["datastore", "migrate", "unlock"]).contains("Datastore unlocked."));
    // The address taken before the split is still held, by the same workload.
    let info = ok(&etcd, &["ipam", "show", "--ip", &first_ip]);
    assert!(
        info.contains("in use") && info.contains("k8s-pod-network.first"),
        "{info}"
    );
    // New ADDs work again and come from the split pools; DEL releases.
    let (added, second) = ipam_plugin(&plugin, &etcd, "ADD", "second");
    assert!(added, "{second}");
    assert!(address(&second).starts_with("10.90.0."), "{second}");
    assert!(ipam_plugin(&plugin, &etcd, "DEL", "first").0);
    let info = ok(&etcd, &["ipam", "show", "--ip", &first_ip]);
    assert!(info.contains("not assigned"), "{info}");
    let check = calyx(&etcd, &["ipam", "check"], None);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

#[test]
fn delete_workload_endpoint_by_name_and_namespace() {
    let Some(etcd) = Etcd::start("delete_workload_endpoint_by_name_and_namespace") else {
        return;
    };
    let name = "node1-k8s-web--0-eth0";
    let key = format!("{WEPS}shop/{name}");
    let wep = serde_json::json!({
        "kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": name, "namespace": "shop", "uid": "u",
                     "labels": {"projectcalico.org/namespace": "shop", "projectcalico.org/orchestrator": "k8s"}},
        "spec": {"orchestrator": "k8s", "node": "node1", "pod": "web-0", "endpoint": "eth0",
                 "containerID": "c0ffee", "ipNetworks": ["10.90.0.5/32"], "interfaceName": "cali0123456789a",
                 "mac": "ee:ee:ee:ee:ee:ee", "futureField": 1}
    });
    etcd.etcdctl(&["put", &key, &wep.to_string()]);
    let other = format!("{WEPS}default/{name}");
    etcd.etcdctl(&["put", &other, &wep.to_string()]);

    // Namespaced: without -n it is looked up in `default`, and only that one goes.
    let line = fails(&etcd, &["delete", "wep", "nope", "-n", "shop"], None);
    assert!(line.contains("does not exist"), "{line}");
    ok(&etcd, &["delete", "workloadendpoint", name, "-n", "shop"]);
    assert!(etcd.etcdctl(&["get", &key]).trim().is_empty());
    assert!(!etcd.etcdctl(&["get", &other]).trim().is_empty());
    let line = fails(&etcd, &["delete", "wep", name, "-n", "shop"], None);
    assert!(line.contains("does not exist"), "{line}");
    ok(
        &etcd,
        &["delete", "wep", name, "-n", "shop", "--skip-not-exists"],
    );
    ok(&etcd, &["delete", "weps", name]);
    assert!(etcd
        .etcdctl(&["get", "--prefix", "--keys-only", WEPS])
        .trim()
        .is_empty());
}
