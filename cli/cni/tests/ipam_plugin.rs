//! The `calyx-ipam` binary run as a container runtime runs it: environment, stdin, stdout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use calyx_datastore::store::etcd::{EtcdConfig, EtcdStore};
use calyx_datastore::store::Store;
use calyx_ipam::fixtures::{put_node, put_pool};
use calyx_tests::etcd::Etcd;
use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn plugin(command: &str, container: &str, stdin: &str) -> Run {
    plugin_with(command, container, stdin, &[])
}

fn plugin_with(command: &str, container: &str, stdin: &str, env: &[(&str, &str)]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_calyx-ipam"))
        .env_clear()
        .envs(env.iter().copied())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", format!("/var/run/netns/{container}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env(
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn cni_add_check_del() {
    let Some(etcd) = Etcd::start("cni_add_check_del") else {
        return;
    };
    let store = EtcdStore::connect(&EtcdConfig::from_endpoints(etcd.endpoint()).unwrap())
        .await
        .unwrap();
    put_pool(&store, "default-ipv4-ippool", "10.20.0.0/16", 26, "all()")
        .await
        .unwrap();
    put_node(&store, "node1", &[]).await.unwrap();
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"calyx","nodename":"node1","etcd_endpoints":"{}","ipam":{{"type":"calyx-ipam"}}}}"#,
        etcd.endpoint()
    );

    // Bad stdin first: a CNI error, non-zero exit, nothing written.
    let bad = plugin("ADD", "c1", "{this is not json");
    assert_ne!(bad.code, 0);
    let err: Value = serde_json::from_str(&bad.stdout).unwrap();
    assert_eq!(err["code"], 6, "{}", bad.stdout);
    assert!(err["msg"].as_str().unwrap().contains("decode"));
    assert!(store.list("/calico/ipam/").await.unwrap().kvs.is_empty());
    let no_cmd = plugin("", "c1", &conf);
    assert_ne!(no_cmd.code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&no_cmd.stdout).unwrap()["code"],
        4
    );

    let version = plugin("VERSION", "", "");
    assert_eq!(version.code, 0, "{}", version.stderr);
    let v: Value = serde_json::from_str(&version.stdout).unwrap();
    assert!(v["supportedVersions"]
        .as_array()
        .unwrap()
        .contains(&Value::from("1.0.0")));

    let add = plugin("ADD", "c1", &conf);
    assert_eq!(add.code, 0, "stdout {} stderr {}", add.stdout, add.stderr);
    let result: Value = serde_json::from_str(&add.stdout).unwrap();
    assert_eq!(result["cniVersion"], "1.0.0");
    let address = result["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(
        address.starts_with("10.20.") && address.ends_with("/32"),
        "{address}"
    );
    assert_eq!(result["routes"][0]["dst"], "0.0.0.0/0");
    assert!(store
        .get("/calico/ipam/v2/handle/k8s-pod-network.c1")
        .await
        .unwrap()
        .is_some());

    // A retried ADD gets the same address.
    let again = plugin("ADD", "c1", &conf);
    assert_eq!(again.code, 0);
    let r2: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(r2["ips"][0]["address"], address.as_str());

    let with_prev = {
        let mut c: Value = serde_json::from_str(&conf).unwrap();
        c["prevResult"] = result.clone();
        c.to_string()
    };
    let check = plugin("CHECK", "c1", &with_prev);
    assert_eq!(check.code, 0, "{} {}", check.stdout, check.stderr);
    assert!(check.stdout.trim().is_empty());

    let del = plugin("DEL", "c1", &with_prev);
    assert_eq!(del.code, 0, "{} {}", del.stdout, del.stderr);
    assert!(del.stdout.trim().is_empty());
    assert!(store
        .get("/calico/ipam/v2/handle/k8s-pod-network.c1")
        .await
        .unwrap()
        .is_none());
    let del2 = plugin("DEL", "c1", &conf);
    assert_eq!(
        del2.code, 0,
        "DEL of something gone succeeds: {}",
        del2.stdout
    );
    let never = plugin("DEL", "never-added", &conf);
    assert_eq!(never.code, 0);

    let check_gone = plugin("CHECK", "c1", &with_prev);
    assert_ne!(check_gone.code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&check_gone.stdout).unwrap()["code"],
        3
    );
}

#[test]
fn unreachable_etcd_is_try_again_later() {
    let port = calyx_tests::free_port();
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"net","nodename":"n","etcd_endpoints":"http://127.0.0.1:{port}","ipam":{{"type":"calyx-ipam"}}}}"#
    );
    // The deadline cut short, so that the test does not wait Calico's 90 s.
    let r = plugin_with("ADD", "c9", &conf, &[("CALYX_CNI_TIMEOUT", "2")]);
    assert_ne!(r.code, 0);
    let e: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(e["code"], 11, "{}", r.stdout);
    assert!(
        r.stderr.contains("retrying within the CNI deadline"),
        "retried before giving up: {}",
        r.stderr
    );
    let bad = plugin_with("ADD", "c9", &conf, &[("CALYX_CNI_TIMEOUT", "soon")]);
    let e: Value = serde_json::from_str(&bad.stdout).unwrap();
    assert_eq!(e["code"], 4, "{}", bad.stdout);
    assert!(e["msg"].as_str().unwrap().contains("CALYX_CNI_TIMEOUT"));
}

/// An ADD that meets a datastore that is away (restarting, overloaded) waits for it within
/// its deadline instead of failing the pod: etcd is down when the ADD starts and comes back
/// two seconds later; the ADD succeeds with an address that etcd holds.
#[tokio::test]
async fn add_rides_out_an_etcd_outage() {
    let Some(mut etcd) = Etcd::start("add_rides_out_an_etcd_outage") else {
        return;
    };
    let store = EtcdStore::connect(&EtcdConfig::from_endpoints(etcd.endpoint()).unwrap())
        .await
        .unwrap();
    put_pool(&store, "default-ipv4-ippool", "10.21.0.0/16", 26, "all()")
        .await
        .unwrap();
    put_node(&store, "node1", &[]).await.unwrap();
    drop(store);
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"calyx","nodename":"node1","etcd_endpoints":"{}","ipam":{{"type":"calyx-ipam"}}}}"#,
        etcd.endpoint()
    );
    etcd.kill();
    let add = std::thread::spawn(move || {
        plugin_with(
            "ADD",
            "outage",
            &conf,
            &[("CALYX_CNI_TIMEOUT", "60"), ("CALYX_IPAM_LOG", "warn")],
        )
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    etcd.restart();
    let r = add.join().unwrap();
    assert_eq!(r.code, 0, "stdout {} stderr {}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("retrying within the CNI deadline"),
        "{}",
        r.stderr
    );
    let result: Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .starts_with("10.21."));
    let store = EtcdStore::connect(&EtcdConfig::from_endpoints(etcd.endpoint()).unwrap())
        .await
        .unwrap();
    assert!(store
        .get("/calico/ipam/v2/handle/k8s-pod-network.outage")
        .await
        .unwrap()
        .is_some());
}

/// What an ADD leaves when its write reached etcd but its answer and its own undo did not:
/// the final rollback waits for etcd (within its deadline) and releases the handle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_add_releases_its_handle_once_etcd_answers() {
    use calyx_ipam::{AllocationAttrs, AssignArgs, Family, Ipam};
    let Some(mut etcd) = Etcd::start("a_failed_add_releases_its_handle_once_etcd_answers") else {
        return;
    };
    let store = EtcdStore::connect(&EtcdConfig::from_endpoints(etcd.endpoint()).unwrap())
        .await
        .unwrap();
    put_pool(&store, "default-ipv4-ippool", "10.22.0.0/16", 26, "all()")
        .await
        .unwrap();
    put_node(&store, "node1", &[]).await.unwrap();
    let ipam = Ipam::new(store.clone());
    let held = ipam
        .assign(AssignArgs {
            handle: "net.failed".to_string(),
            node: "node1".to_string(),
            family: Family::V4,
            count: 1,
            attrs: AllocationAttrs::default(),
            pools: None,
        })
        .await
        .unwrap();
    assert_eq!(held.len(), 1);

    etcd.kill();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let rollback = tokio::spawn(async move {
        calyx_cni::ipam_plugin::roll_back_add(&ipam, "net.failed", deadline).await
    });
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        !rollback.is_finished(),
        "it waits for etcd instead of giving up"
    );
    // Kept until the end: dropping it stops etcd.
    let _etcd = tokio::task::spawn_blocking(move || {
        etcd.restart();
        etcd
    })
    .await
    .unwrap();
    assert_eq!(
        rollback.await.unwrap(),
        Ok(1),
        "the held address is released"
    );
    assert!(store
        .get("/calico/ipam/v2/handle/net.failed")
        .await
        .unwrap()
        .is_none());
    let info = Ipam::new(store).ip_info(held[0]).await.unwrap();
    assert!(!info.allocated, "{info:?}");
}
