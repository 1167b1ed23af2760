//! The nftables rules engine against a real kernel, in network namespaces: the table is
//! written, read back, repaired after vandalism by hand (`nft`), and removed on uninstall;
//! natOutgoing and forwarding carry real TCP traffic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use calyx_felix::rules::calyx::{self, NatExclusions, NatSettings};
use calyx_felix::rules::{RulesConfig, RulesEngine, RulesHandle, Worker};
use calyx_felix::run_in_netns;
use common::*;
use tokio_util::sync::CancellationToken;

fn skip(test: &str) -> bool {
    if skip_without_root(test) {
        return true;
    }
    if try_run(&["nft", "--version"]).is_err() {
        eprintln!("SKIP {test}: the `nft` command is missing (package nftables)");
        return true;
    }
    false
}

/// An engine running in `ns`; cancelled on drop.
struct Engine {
    handle: RulesHandle,
    token: CancellationToken,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

fn start(ns: &Netns, settings: &NatSettings) -> Engine {
    let cfg = RulesConfig {
        // Long: repairs in these tests must come from nf_tables notifications.
        resync_interval: Duration::from_secs(3600),
        ..RulesConfig::default()
    };
    let eng = run_in_netns(ns.path(), move || RulesEngine::new(cfg))
        .unwrap()
        .unwrap();
    let handle = eng.handle();
    handle.set_desired(calyx::ruleset(settings));
    let token = CancellationToken::new();
    tokio::spawn(eng.run(token.clone()));
    Engine { handle, token }
}

fn nft(ns: &Netns, args: &str) -> Result<String, String> {
    ns.exec(&format!("nft {args}"))
}

fn listing(ns: &Netns) -> String {
    nft(ns, "list table inet calyx").unwrap_or_else(|e| e)
}

fn pools(nat: bool) -> NatSettings {
    NatSettings {
        pools: vec![
            ("10.65.0.0/16".parse().unwrap(), nat),
            ("192.168.60.0/24".parse().unwrap(), false),
            ("fd00:65::/48".parse().unwrap(), true),
        ],
        accept_in_iptables_forward: true,
        ..NatSettings::default()
    }
}

/// The masq set holds exactly `want` (as `nft` prints its elements).
fn masq_v4_is(ns: &Netns, want: Option<&str>) -> bool {
    let out = nft(ns, "list set inet calyx masq-ipam-pools-v4").unwrap_or_default();
    match want {
        Some(w) => out.contains(w),
        None => !out.contains("elements") && out.contains("masq-ipam-pools-v4"),
    }
}

async fn wait_for(what: &str, ns: &Netns, h: &RulesHandle, f: impl FnMut() -> bool) {
    let ok = wait_until_async(Duration::from_secs(10), f).await;
    assert!(ok, "{what}: {:#?}\n{}", h.status(), listing(ns));
}

fn complete(ns: &Netns) -> bool {
    let l = listing(ns);
    l.contains("10.65.0.0/16")
        && l.contains("192.168.60.0/24")
        && l.contains("masquerade fully-random")
        && l.contains("iifname \"cali*\" accept")
        && l.contains("jump nat-outgoing")
        && l.contains("type nat hook postrouting priority srcnat")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_is_written_read_back_and_repaired() {
    if skip("rules_repair") {
        return;
    }
    let ns = Netns::new("rulesrep", "n");
    let eng = start(&ns, &pools(true));
    let h = eng.handle.clone();
    wait_for("first write", &ns, &h, || complete(&ns)).await;
    assert!(masq_v4_is(&ns, Some("10.65.0.0/16")));
    // Read back equal: a forced check writes nothing.
    let st = h.status();
    assert!(st.in_sync && st.last_error.is_none(), "{st:?}");

    // Changes to other tables cost no check (notifications are filtered by table).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let checks = h.status().checks;
    nft(&ns, "add table inet someone-else").unwrap();
    nft(
        &ns,
        "add chain inet someone-else c { type filter hook input priority 0 ; }",
    )
    .unwrap();
    nft(&ns, "add rule inet someone-else c counter accept").unwrap();
    nft(&ns, "delete table inet someone-else").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.status().checks, checks, "{:?}", h.status());

    // Flushed by hand.
    nft(&ns, "flush table inet calyx").unwrap();
    wait_for("after flush table", &ns, &h, || complete(&ns)).await;
    // Deleted by hand.
    nft(&ns, "delete table inet calyx").unwrap();
    wait_for("after delete table", &ns, &h, || complete(&ns)).await;
    // A rule added by hand is removed; one deleted by hand comes back.
    nft(&ns, "add rule inet calyx forward counter drop").unwrap();
    wait_for("after an extra rule", &ns, &h, || {
        !listing(&ns).contains("drop") && complete(&ns)
    })
    .await;
    nft(&ns, "flush chain inet calyx nat-outgoing").unwrap();
    wait_for("after flush chain", &ns, &h, || complete(&ns)).await;
    // A set element deleted by hand, and one added.
    nft(
        &ns,
        "delete element inet calyx masq-ipam-pools-v4 { 10.65.0.0/16 }",
    )
    .unwrap();
    nft(
        &ns,
        "add element inet calyx all-ipam-pools-v4 { 172.31.0.0/16 }",
    )
    .unwrap();
    wait_for("after element edits", &ns, &h, || {
        masq_v4_is(&ns, Some("10.65.0.0/16")) && !listing(&ns).contains("172.31.0.0")
    })
    .await;
    // A base chain's priority changed (deleted and re-created by hand in one nft transaction,
    // so that the engine cannot repair in between).
    nft(
        &ns,
        "delete chain inet calyx forward ; \
         add chain inet calyx forward { type filter hook forward priority 0 ; }",
    )
    .unwrap();
    wait_for("after a base chain edit", &ns, &h, || {
        listing(&ns).contains("priority filter - 10") && complete(&ns)
    })
    .await;
    // Changes made close together are repaired together (debounce): fewer repairs than edits.
    assert!(h.status().repairs >= 4, "{:?}", h.status());

    // Desired changes: natOutgoing off, then on.
    h.set_desired(calyx::ruleset(&pools(false)));
    wait_for("natOutgoing off", &ns, &h, || masq_v4_is(&ns, None)).await;
    h.set_desired(calyx::ruleset(&pools(true)));
    wait_for("natOutgoing on", &ns, &h, || {
        masq_v4_is(&ns, Some("10.65.0.0/16"))
    })
    .await;

    // Vandalism and a desired change at once (the change may be planned against the state
    // last written before the notification is read): both end up in the kernel.
    nft(&ns, "flush table inet calyx").unwrap();
    h.set_desired(calyx::ruleset(&pools(false)));
    wait_for("flush + change", &ns, &h, || {
        let l = listing(&ns);
        masq_v4_is(&ns, None) && l.contains("jump nat-outgoing") && l.contains("\"cali*\"")
    })
    .await;

    // Uninstall.
    drop(eng);
    tokio::time::sleep(Duration::from_millis(100)).await;
    run_in_netns(ns.path(), || {
        let mut w = Worker::open().unwrap();
        w.set_desired(calyx::ruleset(&pools(true)));
        w.remove_all().unwrap();
    })
    .unwrap();
    assert!(
        nft(&ns, "list table inet calyx").is_err(),
        "{}",
        listing(&ns)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_rules_kept_first_in_iptables_forward() {
    if skip("rules_foreign") {
        return;
    }
    let ns = Netns::new("rulesfwd", "n");
    nft(&ns, "add table ip filter").unwrap();
    nft(
        &ns,
        "add chain ip filter FORWARD { type filter hook forward priority 0 ; policy drop ; }",
    )
    .unwrap();
    nft(&ns, "add rule ip filter FORWARD iifname \"docker0\" accept").unwrap();
    let eng = start(&ns, &pools(true));
    let h = eng.handle.clone();
    let fwd = || nft(&ns, "list chain ip filter FORWARD").unwrap_or_default();
    let ours_first = || {
        let l = fwd();
        let cali = l.find("iifname \"cali*\" accept");
        let docker = l.find("docker0");
        matches!((cali, docker), (Some(c), Some(d)) if c < d) && l.contains("policy drop")
    };
    wait_for("inserted", &ns, &h, ours_first).await;
    // No ip6 filter table: nothing created there.
    assert!(nft(&ns, "list table ip6 filter").is_err());
    // Flushed by hand: inserted again; the foreign rule added back by its owner stays after.
    nft(&ns, "flush chain ip filter FORWARD").unwrap();
    nft(&ns, "add rule ip filter FORWARD iifname \"docker0\" accept").unwrap();
    wait_for("re-inserted", &ns, &h, ours_first).await;
    // Uninstall removes only Calyx's rules.
    drop(eng);
    tokio::time::sleep(Duration::from_millis(100)).await;
    run_in_netns(ns.path(), || {
        let mut w = Worker::open().unwrap();
        w.set_desired(calyx::ruleset(&pools(true)));
        w.remove_all().unwrap();
    })
    .unwrap();
    let l = fwd();
    assert!(!l.contains("cali") && l.contains("docker0"), "{l}");
}

/// A TCP listener in a namespace that records the address of each peer.
struct Listener {
    peers: Arc<Mutex<Vec<SocketAddr>>>,
}

fn listen(ns: &Netns, addr: &str) -> Listener {
    let addr: SocketAddr = addr.parse().unwrap();
    let l = run_in_netns(ns.path(), move || TcpListener::bind(addr))
        .unwrap()
        .unwrap();
    let peers = Arc::new(Mutex::new(Vec::new()));
    let p = peers.clone();
    // Ends with the test process; the namespace going away closes nothing here, so the
    // thread only ever blocks in accept.
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            if let Ok(peer) = s.peer_addr() {
                p.lock().unwrap().push(peer);
            }
            let _ = s.write_all(b"ok");
        }
    });
    Listener { peers }
}

/// Connects from `ns` to `to`; the source address the listener saw, if it worked.
fn connect(ns: &Netns, l: &Listener, to: &str) -> Option<String> {
    connect_peer(ns, l, to).map(|p| p.ip().to_string())
}

/// Connects from `ns` to `to`; the peer (address and port) the listener saw, if it worked.
/// The listener records the peer before it answers, so it is there once the answer is read.
fn connect_peer(ns: &Netns, l: &Listener, to: &str) -> Option<SocketAddr> {
    let to: SocketAddr = to.parse().unwrap();
    let before = l.peers.lock().unwrap().len();
    let ok = run_in_netns(ns.path(), move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_millis(700))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut b = [0u8; 2];
        s.read_exact(&mut b)
    })
    .unwrap();
    ok.ok()?;
    let peers = l.peers.lock().unwrap();
    peers.get(before).copied()
}

/// pod --(cali veth)-- node --(eth0)-- outside. The outside has no route to the pod CIDR
/// (10.65.0.0/16) but one to 192.168.60.0/24's "pool" address it also holds, so traffic to
/// it must not be NATed.
fn topology(test: &str) -> (Netns, Netns, Netns) {
    let pod = Netns::new(test, "pod");
    let node = Netns::new(test, "node");
    let out = Netns::new(test, "out");
    node.ip(&format!(
        "link add cali12ab type veth peer name eth0 netns {}",
        pod.name
    ));
    node.ip(&format!(
        "link add eth0 type veth peer name eth0 netns {}",
        out.name
    ));
    node.ip("addr add 192.168.50.1/24 dev eth0");
    out.ip("addr add 192.168.50.9/24 dev eth0");
    out.ip("addr add 192.168.60.9/32 dev lo");
    for ns in [&node, &out, &pod] {
        ns.ip("link set eth0 up");
    }
    node.ip("link set cali12ab up");
    node.ip("route add 10.65.0.5/32 dev cali12ab");
    node.exec("sysctl -qw net.ipv4.ip_forward=1").unwrap();
    node.exec("sysctl -qw net.ipv4.conf.cali12ab.proxy_arp=1")
        .unwrap();
    // The underlay's gateway: proxy ARP answers the pods' 169.254.1.1 only for an address
    // the node has a route to.
    node.ip("route add default via 192.168.50.9");
    pod.ip("addr add 10.65.0.5/32 dev eth0");
    pod.ip("route add 169.254.1.1 dev eth0");
    pod.ip("route add default via 169.254.1.1");
    (pod, node, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nat_outgoing_and_forward_drop_carry_real_traffic() {
    if skip("rules_traffic") {
        return;
    }
    let (pod, node, out) = topology("rulestcp");
    // A host whose iptables-nft FORWARD policy is DROP (as Docker leaves it).
    nft(&node, "add table ip filter").unwrap();
    nft(
        &node,
        "add chain ip filter FORWARD { type filter hook forward priority 0 ; policy drop ; }",
    )
    .unwrap();
    // The outside may route the "pool" address back to the node, but not the pod CIDR.
    out.ip("route add 10.65.0.5/32 via 192.168.50.1 table 100");
    out.ip("rule add from 192.168.60.9 lookup 100");
    let outside = listen(&out, "192.168.50.9:7000");
    let in_pool = listen(&out, "192.168.60.9:7001");
    // Without Calyx, the DROP policy stops everything.
    assert_eq!(connect(&pod, &in_pool, "192.168.60.9:7001"), None);

    let eng = start(&node, &pools(true));
    let h = eng.handle.clone();
    wait_for("programmed", &node, &h, || complete(&node)).await;
    let seen = connect(&pod, &outside, "192.168.50.9:7000");
    assert_eq!(seen.as_deref(), Some("192.168.50.1"), "{}", listing(&node));
    // Traffic to a pool is never NATed.
    let seen = connect(&pod, &in_pool, "192.168.60.9:7001");
    assert_eq!(seen.as_deref(), Some("10.65.0.5"), "{}", listing(&node));

    // natOutgoing off: no way back from the outside.
    h.set_desired(calyx::ruleset(&pools(false)));
    wait_for("off", &node, &h, || masq_v4_is(&node, None)).await;
    assert_eq!(connect(&pod, &outside, "192.168.50.9:7000"), None);
    // On again.
    h.set_desired(calyx::ruleset(&pools(true)));
    wait_for("on", &node, &h, || masq_v4_is(&node, Some("10.65.0.0/16"))).await;
    let seen = connect(&pod, &outside, "192.168.50.9:7000");
    assert_eq!(seen.as_deref(), Some("192.168.50.1"));

    // natOutgoingAddress: SNAT to a fixed address (one the outside routes back).
    node.ip("addr add 192.168.50.77/32 dev eth0");
    let mut s = pools(true);
    s.nat_outgoing_address = Some("192.168.50.77".parse().unwrap());
    s.nat_port_range = Some((40000, 40100));
    h.set_desired(calyx::ruleset(&s));
    wait_for("snat", &node, &h, || {
        listing(&node).contains("snat ip to 192.168.50.77")
    })
    .await;
    let last = connect_peer(&pod, &outside, "192.168.50.9:7000");
    let last = last.unwrap_or_else(|| panic!("no connection\n{}", listing(&node)));
    assert_eq!(last.ip().to_string(), "192.168.50.77");
    assert!((40000..=40100).contains(&last.port()), "{last}");

    // natPortRange with masquerade.
    let mut s = pools(true);
    s.nat_port_range = Some((41000, 41010));
    h.set_desired(calyx::ruleset(&s));
    wait_for("masquerade ports", &node, &h, || {
        listing(&node).contains("masquerade to :41000-41010")
    })
    .await;
    let last = connect_peer(&pod, &outside, "192.168.50.9:7000").unwrap();
    assert_eq!(last.ip().to_string(), "192.168.50.1");
    assert!((41000..=41010).contains(&last.port()), "{last}");

    // natOutgoingExclusions: IPPoolsAndHostIPs with the outside's address as a host address:
    // not NATed, so (with no route back to the pod) no connection.
    let mut s = pools(true);
    s.exclusions = NatExclusions::IpPoolsAndHostIps;
    s.host_ips = vec!["192.168.50.9/32".parse().unwrap()];
    h.set_desired(calyx::ruleset(&s));
    wait_for("exclusions", &node, &h, || {
        listing(&node).contains("@all-hosts-v4")
    })
    .await;
    assert_eq!(connect(&pod, &outside, "192.168.50.9:7000"), None);
    h.set_desired(calyx::ruleset(&pools(true)));
    wait_for("no exclusions", &node, &h, || {
        !listing(&node).contains("all-hosts-v4")
    })
    .await;
    assert_eq!(
        connect(&pod, &outside, "192.168.50.9:7000").as_deref(),
        Some("192.168.50.1")
    );

    // Without the accept rules in iptables' FORWARD, the DROP policy wins again: Calyx's own
    // forward chain alone cannot override another table's drop.
    let mut s = pools(true);
    s.accept_in_iptables_forward = false;
    h.set_desired(calyx::ruleset(&s));
    wait_for("no inserts", &node, &h, || {
        !nft(&node, "list chain ip filter FORWARD")
            .unwrap_or_default()
            .contains("cali")
    })
    .await;
    assert_eq!(connect(&pod, &outside, "192.168.50.9:7000"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_nft_reads_and_keeps_working_with_calyx_rules() {
    if skip("rules_iptables") {
        return;
    }
    if try_run(&["iptables-nft", "--version"]).is_err() {
        eprintln!("SKIP rules_iptables: iptables-nft is missing (package iptables)");
        return;
    }
    let ns = Netns::new("rulesipt", "n");
    ns.exec("iptables-nft -P FORWARD DROP").unwrap();
    ns.exec("iptables-nft -A FORWARD -i docker0 -j ACCEPT")
        .unwrap();
    let eng = start(&ns, &pools(true));
    let h = eng.handle.clone();
    let rules = || ns.exec("iptables-nft -S FORWARD").unwrap_or_else(|e| e);
    wait_for("inserted", &ns, &h, || rules().contains("-i cali+")).await;
    let listed = rules();
    // iptables-nft understands Calyx's rules (no "unsupported" warnings) and shows them first.
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines[0], "-P FORWARD DROP", "{listed}");
    assert!(
        lines[1].starts_with("-A FORWARD -i cali+") && lines[1].ends_with("-j ACCEPT"),
        "{listed}"
    );
    assert!(lines[2].starts_with("-A FORWARD -o cali+"), "{listed}");
    assert!(!listed.contains("unsupported"), "{listed}");
    // Its owner still edits the chain; Calyx's rules stay first.
    ns.exec("iptables-nft -I FORWARD -i docker1 -j ACCEPT")
        .unwrap();
    wait_for("first again", &ns, &h, || {
        rules().lines().nth(1).is_some_and(|l| l.contains("cali+"))
    })
    .await;
    assert!(rules().contains("-i docker1"), "{}", rules());
    eprintln!("iptables-nft -S FORWARD:\n{}", rules());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transaction_changes_nothing_and_is_retried() {
    if skip("rules_refused") {
        return;
    }
    let ns = Netns::new("rulesref", "n");
    let eng = start(&ns, &pools(true));
    let h = eng.handle.clone();
    wait_for("first write", &ns, &h, || complete(&ns)).await;
    let before = listing(&ns);
    // A change of pools together with a rule the kernel refuses (a jump to no chain): the
    // whole transaction is refused, the pool change included.
    let mut bad = calyx::ruleset(&pools(false));
    let (_, table) = bad.tables.iter_mut().next().unwrap();
    table
        .chains
        .get_mut("forward")
        .unwrap()
        .rules
        .push(calyx_felix::rules::model::Rule::new(
            vec![],
            calyx_felix::rules::model::Action::Jump("no-such-chain".into()),
            "broken",
        ));
    h.set_desired(bad);
    wait_for("refused", &ns, &h, || h.status().last_error.is_some()).await;
    let st = h.status();
    assert!(!st.in_sync, "{st:?}");
    assert!(
        st.last_error
            .as_deref()
            .unwrap_or("")
            .contains("add rule inet calyx forward (broken)"),
        "{st:?}"
    );
    assert_eq!(
        listing(&ns),
        before,
        "a refused transaction changed the kernel"
    );
    // A good ruleset again: written, error cleared.
    h.set_desired(calyx::ruleset(&pools(false)));
    wait_for("recovered", &ns, &h, || {
        let s = h.status();
        s.in_sync && s.last_error.is_none() && masq_v4_is(&ns, None)
    })
    .await;
}
