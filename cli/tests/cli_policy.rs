//! `calyx` with the policy kinds against a real etcd: apply (Calico's kinds and a Kubernetes
//! NetworkPolicy, beside an IPPool in one file), the etcd keys and values Calico's backend
//! uses, `get` tables and YAML, a Calico-written object with unknown fields kept, refused
//! features as one line with nothing written, delete.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use calyx_tests::etcd::Etcd;
use serde_json::Value;

const CALYX: &str = env!("CARGO_BIN_EXE_calyx");

fn calyx(etcd: &Etcd, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(CALYX)
        .args(args)
        .env("ETCD_ENDPOINTS", etcd.endpoint())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(etcd: &Etcd, args: &[&str], stdin: Option<&str>) -> String {
    let out = calyx(etcd, args, stdin);
    assert!(
        out.status.success(),
        "calyx {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const FILE: &str = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool-a}
spec: {cidr: 10.244.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.deny-blocked}
spec:
  tier: security
  order: 10
  selector: all()
  types: [Egress]
  egress:
  - action: Deny
    destination: {selector: role == 'blocked'}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: blocked, labels: {role: blocked}}
spec: {nets: [192.0.2.0/24, 198.51.100.7]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web
  namespace: shop
spec:
  podSelector:
    matchLabels: {app: web}
  ingress:
  - ports:
    - port: 80
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners, namespace: shop}
spec: {nets: [203.0.113.0/24]}
";

#[test]
fn policy_kinds_apply_get_delete() {
    let Some(etcd) = Etcd::start("policy_kinds_apply_get_delete") else {
        return;
    };
    let out = ok(&etcd, &["apply", "-f", "-"], Some(FILE));
    assert!(
        out.contains("Successfully applied 6 resource(s) (6 created, 0 updated)"),
        "{out}"
    );
    // Calico's keys and values.
    let knp = etcd.etcdctl(&[
        "get",
        "--print-value-only",
        "/calico/resources/v3/projectcalico.org/networkpolicies/shop/knp.default.web",
    ]);
    let v: Value = serde_json::from_str(knp.trim()).unwrap();
    assert_eq!(
        v["spec"]["selector"],
        "projectcalico.org/orchestrator == 'k8s' && app == 'web'"
    );
    assert_eq!(v["spec"]["ingress"][0]["destination"]["ports"][0], 80);
    assert!(v["metadata"]["uid"].is_string() && v["metadata"]["creationTimestamp"].is_string());
    for key in [
        "tiers/security",
        "globalnetworkpolicies/security.deny-blocked",
        "globalnetworksets/blocked",
        "networksets/shop/partners",
        "ippools/pool-a",
    ] {
        let got = etcd.etcdctl(&[
            "get",
            "--keys-only",
            &format!("/calico/resources/v3/projectcalico.org/{key}"),
        ]);
        assert!(got.contains(key), "{key} missing: {got}");
    }
    // Tables with calicoctl's columns.
    let t = ok(&etcd, &["get", "networkpolicies", "-A", "-o", "wide"], None);
    assert!(t.starts_with("NAMESPACE   NAME"), "{t}");
    assert!(
        t.contains("shop        knp.default.web   default   1000"),
        "{t}"
    );
    let t = ok(&etcd, &["get", "tiers"], None);
    assert_eq!(t, "NAME       ORDER\nsecurity   100\n");
    let t = ok(&etcd, &["get", "globalnetworksets", "-o", "wide"], None);
    assert!(t.contains("blocked   192.0.2.0/24,198.51.100.7"), "{t}");
    let t = ok(&etcd, &["get", "networksets", "-n", "shop"], None);
    assert!(t.contains("partners"), "{t}");
    // A Calico-written object with fields Calyx does not model: shown and kept on re-apply.
    etcd.etcdctl(&[
        "put",
        "/calico/resources/v3/projectcalico.org/profiles/kns.shop",
        r#"{"kind":"Profile","apiVersion":"projectcalico.org/v3","metadata":{"name":"kns.shop","uid":"u1","generation":7},"spec":{"ingress":[{"action":"Allow"}],"egress":[{"action":"Allow"}],"labelsToApply":{"pcns.projectcalico.org/name":"shop"},"futureField":{"x":1}}}"#,
    ]);
    let y = ok(&etcd, &["get", "profile", "kns.shop", "-o", "yaml"], None);
    assert!(
        y.contains("futureField") && y.contains("generation: 7"),
        "{y}"
    );
    let t = ok(&etcd, &["get", "profiles", "-o", "wide"], None);
    assert!(
        t.contains("kns.shop   pcns.projectcalico.org/name=shop"),
        "{t}"
    );
    // Refused: one line naming the field, nothing written.
    let before = etcd.etcdctl(&["get", "--prefix", "/calico"]);
    let bad = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: sa}\nspec:\n  selector: all()\n  ingress:\n  - action: Allow\n    source:\n      serviceAccounts: {names: [api]}\n";
    let out = calyx(&etcd, &["apply", "-f", "-"], Some(bad));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert_eq!(
        err.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "{err}"
    );
    assert!(
        err.contains("document 1 (GlobalNetworkPolicy \"sa\"): spec.ingress[0].source.serviceAccounts: matching on service accounts is not supported by Calyx"),
        "{err}"
    );
    let typo = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: t}\nspec: {selectr: all()}\n";
    let out = calyx(&etcd, &["apply", "-f", "-"], Some(typo));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `selectr`"));
    let no_tier = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: x}\nspec: {tier: nosuch, selector: all()}\n";
    // Alone and with an IPPool in the same file: nothing of it is written either.
    let with_pool = format!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pool-z}}\n\
         spec: {{cidr: 10.246.0.0/16}}\n---\n{no_tier}"
    );
    for (args, input) in [
        (&["apply", "-f", "-"][..], no_tier.to_string()),
        (&["apply", "-f", "-"][..], with_pool.clone()),
        (&["validate", "-f", "-"][..], with_pool),
    ] {
        let out = calyx(&etcd, args, Some(&input));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success() && err.contains("spec.tier: tier \"nosuch\" does not exist"),
            "{args:?} {input}: {err} {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let out = calyx(&etcd, &["delete", "tier", "security"], None);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("tier \"security\" still has 1 polic"),
        "{err}"
    );
    assert_eq!(etcd.etcdctl(&["get", "--prefix", "/calico"]), before);
    // A file naming one resource that does not exist deletes nothing at all.
    let before = etcd.etcdctl(&["get", "--prefix", "/calico"]);
    let missing = format!(
        "{FILE}\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: no-such-pool}}\nspec: {{cidr: 10.99.0.0/16}}\n"
    );
    let out = calyx(&etcd, &["delete", "-f", "-"], Some(&missing));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-such-pool"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(etcd.etcdctl(&["get", "--prefix", "/calico"]), before);
    // Delete by name (namespaced) and by file.
    ok(
        &etcd,
        &["delete", "networkpolicy", "knp.default.web", "-n", "shop"],
        None,
    );
    let out = ok(
        &etcd,
        &["delete", "-f", "-", "--skip-not-exists"],
        Some(FILE),
    );
    assert!(out.contains("Successfully deleted"), "{out}");
    let left = etcd.etcdctl(&[
        "get",
        "--prefix",
        "--keys-only",
        "/calico/resources/v3/projectcalico.org/",
    ]);
    assert!(
        !left.contains("tiers/") && !left.contains("networksets/") && !left.contains("ippools/"),
        "{left}"
    );
    assert!(left.contains("profiles/kns.shop"), "{left}");
}

/// Policies written into one tier at once by several `calyx apply` processes all land (each
/// write moves the tier's revision, so writers conflict and the losers check and write
/// again), and the tier cannot be deleted under them.
#[test]
fn concurrent_applies_into_one_tier_all_land() {
    let Some(etcd) = Etcd::start("concurrent_applies_into_one_tier_all_land") else {
        return;
    };
    ok(
        &etcd,
        &["apply", "-f", "-"],
        Some("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 100}\n"),
    );
    let writers: Vec<_> = (0..6)
        .map(|i| {
            let doc = format!(
                "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\n\
                 metadata: {{name: security.p{i}}}\nspec:\n  tier: security\n  selector: all()\n\
                 \x20 ingress:\n  - action: Allow\n"
            );
            let mut child = Command::new(CALYX)
                .args(["apply", "-f", "-"])
                .env("ETCD_ENDPOINTS", etcd.endpoint())
                .env_remove("RUST_LOG")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut input = child.stdin.take().unwrap();
            input.write_all(doc.as_bytes()).unwrap();
            drop(input);
            child
        })
        .collect();
    for (i, w) in writers.into_iter().enumerate() {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "writer {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let table = ok(&etcd, &["get", "globalnetworkpolicies"], None);
    for i in 0..6 {
        assert!(table.contains(&format!("security.p{i}")), "{table}");
    }
    let refused = calyx(&etcd, &["delete", "tier", "security"], None);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("still has 6 polic"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
