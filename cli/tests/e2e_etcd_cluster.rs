//! A cluster on a 3-member etcd whose leader dies (issue 21): three `calyx node run` in BGP
//! mode, every client (daemons, CNI plugins, CLI) given all three members. While pods ping
//! each other across nodes, the etcd leader is SIGKILLed, a new one is elected, pods are
//! created and the CLI used with the old leader gone, and the old member is restarted and
//! rejoins. Existing pods' traffic must not notice; the daemons must stay up and keep following
//! the datastore (a pod made after the failover is reachable from the other nodes).

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use calyx_tests::cluster::{require_plugins, Cluster, Pinger, Pod, Underlay};

fn tag(test: &str) -> String {
    format!("cxk{}{}", test, std::process::id() % 10_000)
}

#[test]
fn pods_keep_talking_while_the_etcd_leader_fails() {
    let test = "pods_keep_talking_while_the_etcd_leader_fails";
    let t = tag("f");
    if !require_plugins(test) {
        return;
    }
    let Some(underlay) = Underlay::with_etcd_members(test, &t, "10.86.1", 3) else {
        return;
    };
    let env = [
        ("CALICO_NETWORKING_BACKEND", "bird"),
        ("CALICO_IPV4POOL_CIDR", "10.186.0.0/16"),
    ];
    let mut c = Cluster::start_on(underlay, 3, &env);
    let pods = c.pods(&t, 1);
    c.all_pairs_ping(&pods, Duration::from_secs(30), "before the failover");

    // Two streams across nodes for the whole failover (10 pings/s each).
    let seconds = 20u32;
    let pingers = [
        Pinger::start(&pods[0].1, &pods[1].1.ip, seconds),
        Pinger::start(&pods[2].1, &pods[0].1.ip, seconds),
    ];
    std::thread::sleep(Duration::from_secs(1));

    let etcd = c.underlay.etcd_cluster_mut();
    let old = etcd.wait_leader(None, Duration::from_secs(20));
    etcd.kill(old);
    let killed = Instant::now();
    let new = etcd.wait_leader(Some(old), Duration::from_secs(30));
    println!(
        "etcd member {old} (leader) killed; member {new} leads after {:.1} s",
        killed.elapsed().as_secs_f64()
    );

    // With the old leader gone: a pod on every node, and the CLI, through the survivors.
    let late: Vec<(usize, Pod)> = c
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| (i, Pod::add(&c.underlay, node, &format!("{t}-q{i}"))))
        .collect();
    println!(
        "3 CNI ADDs done {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    let nodes = c.calyx_ok(&["get", "nodes"]);
    assert_eq!(
        nodes.lines().filter(|l| l.starts_with("node")).count(),
        3,
        "calyx get nodes with a member down:\n{nodes}"
    );

    c.underlay.etcd_cluster_mut().restart(old);
    assert!(
        c.underlay
            .etcd_cluster_mut()
            .wait_healthy(old, Duration::from_secs(30)),
        "the old leader did not rejoin"
    );
    println!(
        "member {old} rejoined {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );

    for p in pingers {
        let (sent, received) = p.finish();
        println!(
            "pod traffic across the failover: {received}/{sent} replies ({} lost)",
            sent - received
        );
        assert!(
            sent - received <= 1,
            "existing pod traffic was disturbed by the etcd failover: {received}/{sent}\n{}\n\
             logs:\n{}",
            c.routes(),
            c.logs()
        );
    }
    for (i, d) in c.daemons.iter_mut().enumerate() {
        assert!(!d.exited(), "node{}'s daemon exited:\n{}", i + 1, d.log());
    }
    // The daemons kept following the datastore: the pods made during the failover are routed
    // from every other node.
    let mut all = pods;
    all.extend(late);
    c.all_pairs_ping(&all, Duration::from_secs(30), "after the failover");
}
