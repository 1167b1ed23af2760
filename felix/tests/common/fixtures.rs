//! Dataplane fixtures shared by the kernel tests: route and hop builders, a node namespace
//! with an underlay, a full desired state, and a running reconciler task.

use std::time::Duration;

use calyx_felix::route::NextHop;
use calyx_felix::*;
use tokio_util::sync::CancellationToken;

use super::{wait_until_async, Netns};

pub const PROTO: u8 = 80;
pub const MAIN: u32 = 254;

pub fn mac(last: u8) -> MacAddr {
    MacAddr([0x66, 0xca, 0x1e, 0, 0, last])
}

pub fn hop(ip: &str) -> RemoteHop {
    RemoteHop::node(ip.parse().unwrap())
}

pub fn vx_hop(ip: &str, tunnel: &str, m: u8) -> RemoteHop {
    RemoteHop {
        node_ip: ip.parse().unwrap(),
        vtep: Some(Vtep {
            tunnel_ip: tunnel.parse().unwrap(),
            mac: mac(m),
        }),
    }
}

pub fn rr(dst: &str, encap: Encap, hops: Vec<RemoteHop>) -> RemoteRoute {
    RemoteRoute {
        dst: dst.parse().unwrap(),
        encap,
        hops,
    }
}

pub fn via(gw: &str, oif: u32, onlink: bool) -> NextHop {
    NextHop {
        gateway: gw.parse().unwrap(),
        oif,
        onlink,
    }
}

/// A namespace with a dummy underlay `eth0` holding `v4` (and optionally `v6`).
pub fn node_ns(test: &str, role: &str, v4: &str, v6: Option<&str>) -> Netns {
    let ns = Netns::new(test, role);
    // No dummy driver on this kernel: a veth pair with both ends up has carrier.
    ns.ip("link add eth0 type veth peer name eth0p");
    ns.ip("link set eth0p up");
    ns.ip(&format!("addr add {v4} dev eth0"));
    if let Some(v6) = v6 {
        ns.ip(&format!("-6 addr add {v6} dev eth0 nodad"));
    }
    ns.ip("link set eth0 up");
    ns
}

pub fn full_state(vx6: bool) -> DesiredState {
    DesiredState {
        node_ipv4: Some("192.168.1.10/24".parse().unwrap()),
        node_ipv6: Some("fd00:1::10/64".parse().unwrap()),
        local_blocks: vec![
            "10.65.0.0/26".parse().unwrap(),
            "fd00:10::/122".parse().unwrap(),
        ],
        remote_routes: vec![
            rr("10.65.1.0/26", Encap::None, vec![hop("192.168.1.11")]),
            rr(
                "10.65.2.0/26",
                Encap::Vxlan,
                vec![vx_hop("192.168.1.12", "10.65.2.0", 2)],
            ),
            rr(
                "10.65.3.0/26",
                Encap::None,
                vec![hop("192.168.1.13"), hop("192.168.1.14")],
            ),
            rr("10.65.4.5/32", Encap::None, vec![hop("192.168.1.15")]),
            rr("10.65.7.0/26", Encap::None, vec![hop("192.168.1.17")]),
            rr("fd00:10::40/122", Encap::None, vec![hop("fd00:1::11")]),
            rr(
                "fd00:10::80/122",
                Encap::Vxlan,
                vec![vx_hop("fd00:1::12", "fd00:10::80", 3)],
            ),
        ],
        ipip: None,
        vxlan_v4: Some(VxlanTunnel::calico(
            mac(1),
            Some("10.65.0.0".parse().unwrap()),
        )),
        vxlan_v6: vx6.then(|| VxlanTunnel::calico(mac(1), Some("fd00:10::".parse().unwrap()))),
    }
}

/// Runs a reconciler task; cancels it on drop.
pub struct Running {
    pub handle: ReconcilerHandle,
    token: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), Error>>>,
}

impl Running {
    pub fn start(ns: &Netns, cfg: Config, d: DesiredState) -> Running {
        let rec = ns.reconciler(cfg);
        let handle = rec.handle();
        handle.set_desired(d);
        let token = CancellationToken::new();
        let task = tokio::spawn(rec.run(token.clone()));
        Running {
            handle,
            token,
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(t) = self.task.take() {
            let r = tokio::time::timeout(Duration::from_secs(30), t).await;
            assert!(matches!(r, Ok(Ok(Ok(())))), "reconciler ended badly: {r:?}");
        }
    }

    pub async fn wait_programmed(&self, n: usize, what: &str, ns: &Netns) {
        let ok = wait_until_async(Duration::from_secs(20), || {
            let s = self.handle.status();
            s.routes_programmed >= n && s.routes_desired >= n
        })
        .await;
        assert!(
            ok,
            "{what}: {:#?}\n{}",
            self.handle.status(),
            ns.routes_text()
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.token.cancel();
    }
}
