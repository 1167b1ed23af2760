//! The `calyx` binary as a user runs it, against a real etcd started by the test: applying
//! Calico-style YAML, reading it back in every format, patching, labelling, deleting, and bad
//! input that must leave etcd untouched.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use calyx_tests::cli::{calyx, dump, fails, ok};
use calyx_tests::etcd::Etcd;
use serde_json::Value;

const CALYX: &str = env!("CARGO_BIN_EXE_calyx");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// True when every field of `want` is in `got` with the same value (`got` may hold more:
/// defaults, uid, creationTimestamp, resourceVersion).
fn contains(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| g.get(k).is_some_and(|gv| contains(gv, wv))),
        _ => got == want,
    }
}

fn yaml_documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

const POOLS: &str = r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-a
spec:
  cidr: 10.244.0.0/16
  vxlanMode: Always
  natOutgoing: true
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-b
spec:
  cidr: 10.245.0.0/16
  blockSize: 28
  ipipMode: CrossSubnet
  nodeSelector: "zone == 'a'"
"#;

#[test]
fn apply_all_kinds_then_get_yaml_returns_the_same_objects() {
    let Some(etcd) = Etcd::start("apply_all_kinds_then_get_yaml_returns_the_same_objects") else {
        return;
    };
    let file = fixture("all-kinds.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let out = ok(&etcd, &["apply", "-f", file.to_str().unwrap()]);
    assert!(out.contains("Successfully applied"), "{out}");

    let inputs = yaml_documents(&text);
    assert!(inputs.len() >= 4, "the fixture holds every kind");
    for input in &inputs {
        let kind = input["kind"].as_str().unwrap();
        let name = input["metadata"]["name"].as_str().unwrap();
        let got: Value =
            serde_yaml_ng::from_str(&ok(&etcd, &["get", kind, name, "-o", "yaml"])).unwrap();
        assert!(
            contains(&got, input),
            "{kind} {name}:\nwant {input:#}\ngot {got:#}"
        );
        assert!(got["metadata"]["resourceVersion"].is_string());
        assert!(got["metadata"]["creationTimestamp"].is_string());
    }
    // The list form goes back in unchanged.
    let pools = ok(&etcd, &["get", "ippools", "-o", "yaml"]);
    let list: Value = serde_yaml_ng::from_str(&pools).unwrap();
    assert_eq!(list["kind"], "IPPoolList");
    let out = calyx(&etcd, &["apply", "-f", "-"], Some(&pools));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tables_and_json_show_what_was_applied() {
    let Some(etcd) = Etcd::start("tables_and_json_show_what_was_applied") else {
        return;
    };
    let out = calyx(&etcd, &["create", "-f", "-"], Some(POOLS));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let table = ok(&etcd, &["get", "ippools"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "CIDR", "SELECTOR"]);
    assert_eq!(rows[1], ["pool-a", "10.244.0.0/16", "all()"]);

    let wide = ok(&etcd, &["get", "ippool", "-o", "wide"]);
    let rows: Vec<Vec<&str>> = wide
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "NAME",
            "CIDR",
            "NAT",
            "IPIPMODE",
            "VXLANMODE",
            "DISABLED",
            "DISABLEBGPEXPORT",
            "SELECTOR"
        ]
    );
    assert_eq!(
        rows[1],
        [
            "pool-a",
            "10.244.0.0/16",
            "true",
            "Never",
            "Always",
            "false",
            "false",
            "all()"
        ]
    );
    assert_eq!(
        rows[2][..7],
        [
            "pool-b",
            "10.245.0.0/16",
            "false",
            "CrossSubnet",
            "Never",
            "false",
            "false"
        ]
    );

    let json: Value =
        serde_json::from_str(&ok(&etcd, &["get", "IPPool", "pool-b", "-o", "json"])).unwrap();
    assert_eq!(json["spec"]["blockSize"], 28);
    assert_eq!(json["spec"]["nodeSelector"], "zone == 'a'");
    let json: Value = serde_json::from_str(&ok(&etcd, &["get", "ippools", "-o", "json"])).unwrap();
    assert_eq!(json["items"].as_array().unwrap().len(), 2);
    // Defaults are filled in as Calico does.
    assert_eq!(json["items"][0]["spec"]["blockSize"], 26);

    // create of an existing resource fails and changes nothing.
    let before = dump(&etcd);
    let line = fails(&etcd, &["create", "-f", "-"], Some(POOLS));
    assert!(line.contains("already exists"), "{line}");
    assert_eq!(dump(&etcd), before);
}

#[test]
fn bad_documents_write_nothing_and_name_the_problem() {
    let Some(etcd) = Etcd::start("bad_documents_write_nothing_and_name_the_problem") else {
        return;
    };
    ok(
        &etcd,
        &["apply", "-f", fixture("all-kinds.yaml").to_str().unwrap()],
    );
    let before = dump(&etcd);

    let cases: &[(&str, &[&str])] = &[
        // (input, words the one error line must hold)
        ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p1}\nspec: {cidr: 10.9.0.0/16}\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p2}\nspec: {cidr: 10.10.0.0/16, blockSize: 33}\n",
         &["document 2", "p2", "blockSize", "33"]),
        ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p3}\nspec: {cidr: 10.11.0.1/16}\n",
         &["document 1", "p3", "cidr", "10.11.0.1/16"]),
        ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p4}\nspec: {cidr: 10.12.0.0/16, vxlanMode: Sometimes}\n",
         &["document 1", "vxlanMode", "Sometimes"]),
        ("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: Bad_Name}\nspec: {peerIP: 10.0.0.1, asNumber: 64512}\n",
         &["document 1", "Bad_Name"]),
        ("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: peer}\nspec: {peerIP: 10.0.0.300, asNumber: 64512}\n",
         &["document 1", "peerIP", "10.0.0.300"]),
        ("kind: IPPool\n  bad: [indent\n", &["document 1"]),
    ];
    for (input, words) in cases {
        for verb in ["apply", "create", "validate"] {
            let line = fails(&etcd, &[verb, "-f", "-"], Some(input));
            for w in *words {
                assert!(line.contains(w), "{verb}: {line:?} should mention {w:?}");
            }
        }
        assert_eq!(
            dump(&etcd),
            before,
            "a failed command changed etcd for {input}"
        );
    }

    // A pool that overlaps a stored one is refused, naming both.
    let overlap = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: overlap}\nspec: {cidr: 10.244.128.0/17}\n";
    let stored: Value =
        serde_json::from_str(&ok(&etcd, &["get", "ippools", "-o", "json"])).unwrap();
    let stored_cidr = stored["items"][0]["spec"]["cidr"]
        .as_str()
        .unwrap()
        .to_string();
    let overlap = overlap.replace("10.244.128.0/17", &stored_cidr);
    let line = fails(&etcd, &["apply", "-f", "-"], Some(&overlap));
    assert!(line.contains("overlap"), "{line}");
    assert_eq!(dump(&etcd), before);
}

#[test]
fn patch_label_and_delete() {
    let Some(etcd) = Etcd::start("patch_label_and_delete") else {
        return;
    };
    let out = calyx(&etcd, &["apply", "-f", "-"], Some(POOLS));
    assert!(out.status.success());

    ok(
        &etcd,
        &[
            "patch",
            "ippool",
            "pool-b",
            "-p",
            r#"{"spec":{"ipipMode":"Never","vxlanMode":"Always"}}"#,
        ],
    );
    let json: Value =
        serde_json::from_str(&ok(&etcd, &["get", "ippool", "pool-b", "-o", "json"])).unwrap();
    assert_eq!(json["spec"]["vxlanMode"], "Always");
    assert_eq!(json["spec"]["ipipMode"], "Never");

    let before = dump(&etcd);
    let line = fails(
        &etcd,
        &[
            "patch",
            "ippool",
            "pool-b",
            "-p",
            r#"{"spec":{"cidr":"10.99.0.0/16"}}"#,
        ],
        None,
    );
    assert!(
        line.contains("spec.cidr") && line.contains("immutable"),
        "{line}"
    );
    let line = fails(
        &etcd,
        &[
            "patch",
            "ippool",
            "pool-b",
            "-p",
            r#"{"spec":{"ipipMode":"Always"}}"#,
        ],
        None,
    );
    assert!(
        line.contains("ipipMode") || line.contains("vxlanMode"),
        "{line}"
    );
    let line = fails(
        &etcd,
        &["patch", "ippool", "pool-b", "-p", "{not json"],
        None,
    );
    assert!(line.contains("JSON"), "{line}");
    let line = fails(&etcd, &["patch", "ippool", "nope", "-p", "{}"], None);
    assert!(line.contains("does not exist"), "{line}");
    assert_eq!(dump(&etcd), before);

    ok(&etcd, &["label", "ippool", "pool-a", "team=net", "tier=1"]);
    let json: Value =
        serde_json::from_str(&ok(&etcd, &["get", "ippool", "pool-a", "-o", "json"])).unwrap();
    assert_eq!(json["metadata"]["labels"]["team"], "net");
    let line = fails(&etcd, &["label", "ippool", "pool-a", "team=other"], None);
    assert!(line.contains("--overwrite"), "{line}");
    ok(
        &etcd,
        &["label", "ippool", "pool-a", "team=other", "--overwrite"],
    );
    ok(&etcd, &["label", "ippool", "pool-a", "tier-"]);
    let json: Value =
        serde_json::from_str(&ok(&etcd, &["get", "ippool", "pool-a", "-o", "json"])).unwrap();
    assert_eq!(
        json["metadata"]["labels"],
        serde_json::json!({"team": "other"})
    );

    ok(&etcd, &["delete", "ippool", "pool-a"]);
    let line = fails(&etcd, &["get", "ippool", "pool-a"], None);
    assert!(line.contains("does not exist"), "{line}");
    let out = calyx(&etcd, &["delete", "-f", "-"], Some(POOLS));
    assert!(
        !out.status.success(),
        "pool-a is gone, so delete -f must fail"
    );
    let out = calyx(
        &etcd,
        &["delete", "--skip-not-exists", "-f", "-"],
        Some(POOLS),
    );
    assert!(out.status.success());
    assert_eq!(
        ok(&etcd, &["get", "ippools"]).lines().count(),
        1,
        "only the header is left"
    );
}

#[test]
fn unknown_kind_is_refused() {
    let Some(etcd) = Etcd::start("unknown_kind_is_refused") else {
        return;
    };
    let line = fails(&etcd, &["get", "widgets"], None);
    assert!(line.contains("widgets"), "{line}");
}

#[test]
fn unreachable_etcd_fails_fast_with_one_line() {
    let port = calyx_tests::free_port();
    let started = Instant::now();
    let out = Command::new(CALYX)
        .args(["get", "ippools", "--etcd-endpoints"])
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--etcd-timeout", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("unavailable") && stderr.contains(&port.to_string()),
        "{stderr}"
    );
    // A bound for "not a hang", far above the 2 s timeout.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn completion_scripts_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(CALYX)
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("calyx") && script.contains("apply"),
            "{shell}: {script}"
        );
    }
}

#[test]
fn ipam_commands_show_check_release_and_configure() {
    let Some(etcd) = Etcd::start("ipam_commands_show_check_release_and_configure") else {
        return;
    };
    let pools = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.90.0.0/24, blockSize: 28}\n";
    let out = calyx(&etcd, &["apply", "-f", "-"], Some(pools));
    assert!(out.status.success());
    let node = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: node1}\nspec: {bgp: {ipv4Address: 10.0.0.1/24}}\n";
    assert!(calyx(&etcd, &["apply", "-f", "-"], Some(node))
        .status
        .success());

    // Allocate through the CNI IPAM plugin, as a runtime would.
    let plugin = calyx_tests::workspace_binary("calyx-ipam");
    if !plugin.is_file() {
        eprintln!("SKIPPED ipam part: calyx-ipam is not built (tests/run.sh builds it)");
        return;
    }
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"calyx","nodename":"node1","etcd_endpoints":"{}","ipam":{{"type":"calyx-ipam"}}}}"#,
        etcd.endpoint()
    );
    let mut child = Command::new(&plugin)
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "abc")
        .env("CNI_NETNS", "/var/run/netns/none")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ip = result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();

    let table = ok(&etcd, &["ipam", "show", "--show-blocks"]);
    assert!(
        table.contains("GROUPING") && table.contains("IPS IN USE"),
        "{table}"
    );
    assert!(table.contains("10.90.0.0/24"), "{table}");
    let json: Value = serde_json::from_str(&ok(&etcd, &["ipam", "show", "-o", "json"])).unwrap();
    assert_eq!(
        json["pools"][0]["in_use"]
            .as_u64()
            .or(json["pools"][0]["inUse"].as_u64()),
        Some(1),
        "{json}"
    );
    let info = ok(&etcd, &["ipam", "show", "--ip", &ip]);
    assert!(
        info.contains("in use") && info.contains("k8s-pod-network.abc"),
        "{info}"
    );

    let check = ok(&etcd, &["ipam", "check"]);
    assert!(!check.is_empty());
    // Told which workloads exist, check finds an address whose workload does not (an ADD
    // that failed and kept it, a pod removed without a DEL).
    let line = fails(
        &etcd,
        &["ipam", "check", "--live-handles", "-"],
        Some("# sandboxes\nk8s-pod-network.other\n"),
    );
    assert!(line.contains("IPAM has problems"), "{line}");
    let out = calyx(
        &etcd,
        &["ipam", "check", "--live-handles", "-"],
        Some("k8s-pod-network.other\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("leaked: {ip} held by k8s-pod-network.abc")),
        "{stdout}"
    );
    let out = calyx(
        &etcd,
        &["ipam", "check", "--live-handles", "-"],
        Some("k8s-pod-network.abc\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let line = fails(&etcd, &["ipam", "release", "--ip", "banana"], None);
    assert!(line.contains("banana"), "{line}");
    ok(
        &etcd,
        &["ipam", "release", "--handle", "k8s-pod-network.abc"],
    );
    let info = ok(&etcd, &["ipam", "show", "--ip", &ip]);
    assert!(info.contains("not assigned"), "{info}");

    let out = ok(
        &etcd,
        &[
            "ipam",
            "configure",
            "--strictaffinity=true",
            "--max-blocks-per-host",
            "4",
        ],
    );
    assert!(
        out.contains("strictAffinity=true") && out.contains("maxBlocksPerHost=4"),
        "{out}"
    );
}
