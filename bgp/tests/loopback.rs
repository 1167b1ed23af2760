//! Two or three Calyx speakers in one process over loopback addresses (127.0.0.x): sessions,
//! route exchange, withdrawals, shutdown communication, max-prefix, collisions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use calyx_bgp::{
    BestRouteChange, CancellationToken, GlobalConfig, PeerConfig, Policy, Speaker, State,
};
use ipnet::IpNet;
use tokio::sync::mpsc;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn speaker(addr: &str, asn: u32, port: u16) -> Speaker {
    let cfg = GlobalConfig {
        router_id: addr.parse().unwrap(),
        local_as: asn,
        listen: Some(SocketAddr::new(ip(addr), port)),
        ..Default::default()
    };
    Speaker::start(cfg, CancellationToken::new()).await.unwrap()
}

fn peer(addr: &str, asn: u32, port: u16, local: &str) -> PeerConfig {
    PeerConfig {
        port,
        local_address: Some(ip(local)),
        hold_time: 9,
        connect_retry: 1,
        ..PeerConfig::new(ip(addr), asn)
    }
}

async fn wait_state(s: &Speaker, peer: &str, st: State, secs: u64) -> bool {
    for _ in 0..secs * 20 {
        if s.status()
            .iter()
            .any(|p| p.address == ip(peer) && p.state == st)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A subscriber feed with the latest change per prefix.
struct Feed {
    rx: mpsc::Receiver<BestRouteChange>,
    seen: std::collections::HashMap<IpNet, BestRouteChange>,
}

impl Feed {
    async fn new(s: &Speaker) -> Feed {
        Feed {
            rx: s.subscribe(1024).await.unwrap(),
            seen: Default::default(),
        }
    }

    fn drain(&mut self) {
        while let Ok(c) = self.rx.try_recv() {
            self.seen.insert(c.prefix, c);
        }
    }

    /// Wait until the prefix is present (`withdrawn == false`) or absent (`true`).
    async fn wait(&mut self, prefix: &str, withdrawn: bool) -> BestRouteChange {
        let p: IpNet = prefix.parse().unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                self.drain();
                if let Some(c) = self.seen.get(&p) {
                    if c.withdrawn == withdrawn {
                        return c.clone();
                    }
                }
                if let Some(c) = self.rx.recv().await {
                    self.seen.insert(c.prefix, c);
                }
            }
        })
        .await;
        r.unwrap_or_else(|_| {
            panic!(
                "{prefix} withdrawn={withdrawn} not seen in time: {:?}",
                self.seen
            )
        })
    }

    fn has(&mut self, prefix: &str) -> bool {
        self.drain();
        let p: IpNet = prefix.parse().unwrap();
        self.seen.get(&p).is_some_and(|c| !c.withdrawn)
    }
}

fn port() -> u16 {
    calyx_tests::free_port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ibgp_pair_exchanges_and_withdraws_routes() {
    // RUST_LOG=calyx_bgp=debug shows both speakers' decisions when this fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (pa, pb) = (port(), port());
    let a = speaker("127.0.0.11", 65000, pa).await;
    let b = speaker("127.0.0.12", 65000, pb).await;
    // Both active: the connections collide and one is resolved away.
    a.set_peers(vec![peer("127.0.0.12", 65000, pb, "127.0.0.11")])
        .await
        .unwrap();
    b.set_peers(vec![peer("127.0.0.11", 65000, pa, "127.0.0.12")])
        .await
        .unwrap();
    let mut feed_b = Feed::new(&b).await;
    a.originate("10.1.0.0/26".parse().unwrap(), None)
        .await
        .unwrap();
    a.originate("fd00:1::/122".parse().unwrap(), None)
        .await
        .unwrap();
    assert!(
        wait_state(&a, "127.0.0.12", State::Established, 30).await,
        "{:?}",
        a.status()
    );
    let c = feed_b.wait("10.1.0.0/26", false).await;
    assert_eq!(c.next_hops, vec![ip("127.0.0.11")]);
    let c6 = feed_b.wait("fd00:1::/122", false).await;
    assert!(!c6.withdrawn);
    let st = b.status();
    assert_eq!(st[0].prefixes_accepted, 2);
    assert!(
        st[0].capabilities.contains(&"4-octet-as".to_string()),
        "{:?}",
        st[0].capabilities
    );
    assert_eq!(a.status()[0].prefixes_advertised, 2);
    a.withdraw("10.1.0.0/26".parse().unwrap()).await.unwrap();
    assert!(feed_b.wait("10.1.0.0/26", true).await.withdrawn);
    // Hard shutdown: B sees the shutdown communication and withdraws.
    a.shutdown(false).await;
    assert!(feed_b.wait("fd00:1::/122", true).await.withdrawn);
    assert!(
        wait_state(&b, "127.0.0.11", State::Active, 5).await
            || wait_state(&b, "127.0.0.11", State::Connect, 5).await
            || wait_state(&b, "127.0.0.11", State::Idle, 5).await
    );
    let err = b.status()[0].last_error.clone().unwrap_or_default();
    println!("B last error after A's shutdown: {err}");
    b.shutdown(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebgp_export_policy_and_max_prefixes() {
    let (pa, pb, pc) = (port(), port(), port());
    let a = speaker("127.0.0.21", 65001, pa).await; // "ToR"
    let b = speaker("127.0.0.22", 65000, pb).await; // Calyx node
    let c = speaker("127.0.0.23", 65000, pc).await; // another node (iBGP to B)
    let mut tor = peer("127.0.0.22", 65000, pb, "127.0.0.21");
    tor.export = Some(Policy::accept_all());
    a.set_peers(vec![tor]).await.unwrap();
    let mut to_c = peer("127.0.0.23", 65000, pc, "127.0.0.22");
    to_c.passive = true;
    b.set_peers(vec![peer("127.0.0.21", 65001, pa, "127.0.0.22"), to_c])
        .await
        .unwrap();
    c.set_peers(vec![peer("127.0.0.22", 65000, pb, "127.0.0.23")])
        .await
        .unwrap();
    let mut feed_a = Feed::new(&a).await;
    let mut feed_b = Feed::new(&b).await;
    let mut feed_c = Feed::new(&c).await;
    a.originate("0.0.0.0/0".parse().unwrap(), None)
        .await
        .unwrap();
    b.originate("10.2.0.0/26".parse().unwrap(), None)
        .await
        .unwrap();
    c.originate("10.3.0.0/26".parse().unwrap(), None)
        .await
        .unwrap();
    // B learns the default route from the ToR and C's block over iBGP.
    assert_eq!(
        feed_b.wait("0.0.0.0/0", false).await.next_hops,
        vec![ip("127.0.0.21")]
    );
    assert_eq!(
        feed_b.wait("10.3.0.0/26", false).await.next_hops,
        vec![ip("127.0.0.23")]
    );
    // The ToR gets B's block with next hop self, and not C's (iBGP-learned, not reflected).
    assert_eq!(
        feed_a.wait("10.2.0.0/26", false).await.next_hops,
        vec![ip("127.0.0.22")]
    );
    // C gets B's block, not the eBGP-learned default (Calico default export).
    assert_eq!(
        feed_c.wait("10.2.0.0/26", false).await.next_hops,
        vec![ip("127.0.0.22")]
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !feed_a.has("10.3.0.0/26"),
        "iBGP-learned route leaked to the ToR"
    );
    assert!(
        !feed_c.has("0.0.0.0/0"),
        "eBGP-learned route leaked to an iBGP peer"
    );
    assert_eq!(a.status()[0].prefixes_received, 1);

    // Max prefixes: B allows the ToR one prefix; a second one closes the session (Cease/1).
    let mut limited = peer("127.0.0.21", 65001, pa, "127.0.0.22");
    limited.max_prefixes = Some(1);
    let mut to_c = peer("127.0.0.23", 65000, pc, "127.0.0.22");
    to_c.passive = true;
    b.set_peers(vec![limited, to_c]).await.unwrap();
    assert!(wait_state(&b, "127.0.0.21", State::Established, 30).await);
    a.originate("8.8.8.0/24".parse().unwrap(), None)
        .await
        .unwrap();
    let mut ok = false;
    for _ in 0..100 {
        let st = b.status();
        let p = st.iter().find(|p| p.address == ip("127.0.0.21")).unwrap();
        if p.last_error
            .as_deref()
            .is_some_and(|e| e.contains("MaximumPrefixesReached"))
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "{:?}", b.status());
    for s in [a, b, c] {
        s.shutdown(false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_peer_as_is_refused_with_notification() {
    let (pa, pb) = (port(), port());
    let a = speaker("127.0.0.31", 65000, pa).await;
    let b = speaker("127.0.0.32", 65009, pb).await;
    a.set_peers(vec![peer("127.0.0.32", 65001, pb, "127.0.0.31")])
        .await
        .unwrap();
    b.set_peers(vec![peer("127.0.0.31", 65000, pa, "127.0.0.32")])
        .await
        .unwrap();
    let mut seen = None;
    for _ in 0..100 {
        if let Some(e) = a.status()[0].last_error.clone() {
            if e.contains("BadPeerAs") {
                seen = Some(e);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.is_some(), "{:?}", a.status());
    assert_ne!(a.status()[0].state, State::Established);
    let _ = Ipv4Addr::LOCALHOST;
    a.shutdown(false).await;
    b.shutdown(false).await;
}
