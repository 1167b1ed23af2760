//! From the datastore view to Calyx's nftables rules: natOutgoing per IP pool (with
//! FelixConfiguration's `natOutgoingAddress`, `natPortRange`, `natOutgoingExclusions`), and
//! the accept rules for workload and tunnel traffic in the forward path (felix's
//! [`calyx_felix::rules`] writes them). Changes take effect live: every change of the pools or
//! FelixConfigurations recomputes the settings, and felix's rules engine writes the difference
//! (set elements, a rewritten chain) in one transaction.

use std::time::Duration;

use std::net::IpAddr;

use calyx_felix::rules::calyx::{self, NatExclusions, NatSettings};
use calyx_felix::rules::{RulesConfig, RulesEngine, RulesHandle};
use ipnet::IpNet;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::cluster::ClusterState;
use super::felixconfig;

/// The natOutgoing settings node `me` applies. Like Felix's masquerade manager: every pool
/// (disabled ones too, since their addresses may still be in use) is "inside"; traffic from a
/// `natOutgoing` pool to anything outside every pool is masqueraded (or SNATed to
/// `natOutgoingAddress`). With `natOutgoingExclusions: IPPoolsAndHostIPs`, the nodes'
/// addresses (BGP and tunnel addresses, as Felix's all-hosts set) are "inside" too.
pub fn nat_settings(state: &ClusterState, me: &str) -> NatSettings {
    let felix = felixconfig::effective(&state.felix_configs, me);
    let mut host_ips: Vec<IpNet> = Vec::new();
    if felix.nat_outgoing_exclusions == NatExclusions::IpPoolsAndHostIps {
        for n in state.nodes.values() {
            let bgp = n.spec.bgp.as_ref();
            let v4 = [
                bgp.and_then(|b| b.ipv4_address).map(|a| a.addr()),
                n.spec.ipv4_vxlan_tunnel_addr,
                bgp.and_then(|b| b.ipv4_ipip_tunnel_addr),
            ];
            let v6 = [
                bgp.and_then(|b| b.ipv6_address).map(|a| a.addr()),
                n.spec.ipv6_vxlan_tunnel_addr,
            ];
            host_ips.extend(v4.into_iter().flatten().map(|a| IpNet::from(IpAddr::V4(a))));
            host_ips.extend(v6.into_iter().flatten().map(|a| IpNet::from(IpAddr::V6(a))));
        }
    }
    NatSettings {
        pools: state
            .pools
            .values()
            .map(|p| (p.spec.cidr, p.spec.nat_outgoing))
            .collect(),
        nat_outgoing_address: felix.nat_outgoing_address,
        nat_port_range: felix.nat_port_range,
        exclusions: felix.nat_outgoing_exclusions,
        host_ips,
        accept_in_iptables_forward: true,
    }
}

/// Starts the rules engine in this process's network namespace.
pub fn start(
    resync: Duration,
    stop: CancellationToken,
) -> Result<
    (
        RulesHandle,
        JoinHandle<Result<(), calyx_felix::rules::Error>>,
    ),
    calyx_felix::rules::Error,
> {
    let engine = RulesEngine::new(RulesConfig {
        resync_interval: resync,
        ..RulesConfig::default()
    })?;
    let handle = engine.handle();
    Ok((handle, tokio::spawn(engine.run(stop))))
}

/// Hands the rules for `state` to the engine when they differ from the last ones sent.
pub fn feed(rules: &RulesHandle, state: &ClusterState, me: &str, sent: &mut Option<NatSettings>) {
    let settings = nat_settings(state, me);
    if sent.as_ref() != Some(&settings) {
        rules.set_desired(calyx::ruleset(&settings));
        *sent = Some(settings);
    }
}

/// Deletes Calyx's nftables rules from this host (uninstall): table `inet calyx` and Calyx's
/// rules in iptables-nft's `FORWARD` chains; nothing else. A running daemon writes them back.
/// Returns one line per thing removed.
pub fn remove_rules() -> Result<Vec<String>, calyx_felix::rules::Error> {
    let mut worker =
        calyx_felix::rules::Worker::open().map_err(calyx_felix::rules::Error::Socket)?;
    // What Calyx may have written: its table and its inserts, whatever the pools were.
    let mut everything = calyx::ruleset(&NatSettings {
        accept_in_iptables_forward: true,
        ..NatSettings::default()
    });
    // And the network policy table (written by the daemon's second engine).
    everything
        .tables
        .extend(calyx_felix::rules::policy::ruleset(&Default::default()).tables);
    worker.set_desired(everything.clone());
    let stats = worker.remove_all()?;
    let mut out = Vec::new();
    if stats.tables_deleted > 0 {
        for t in everything.tables.keys() {
            out.push(format!("deleted table {t}"));
        }
    }
    if stats.inserts_written > 0 {
        out.push(format!(
            "deleted Calyx's rules from {} foreign chain(s) (iptables-nft FORWARD)",
            stats.inserts_written
        ));
    }
    Ok(out)
}

/// The engine's figures for the node's status.
pub fn status(rules: &RulesHandle) -> crate::status::RulesStatus {
    let s = rules.status();
    crate::status::RulesStatus {
        in_sync: s.in_sync,
        transactions: s.transactions,
        repairs: s.repairs,
        last_error: s.last_error,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use calyx_datastore::resources::{IPPool, IPPoolSpec};

    #[test]
    fn every_pool_inside_nat_ones_masqueraded() {
        let mut state = ClusterState::default();
        for (name, cidr, nat) in [("a", "10.65.0.0/16", true), ("b", "10.66.0.0/16", false)] {
            let mut spec = IPPoolSpec::new(cidr.parse().unwrap());
            spec.nat_outgoing = nat;
            state.pools.insert(name.into(), IPPool::new(name, spec));
        }
        let s = nat_settings(&state, "n1");
        assert_eq!(
            s.pools,
            vec![
                ("10.65.0.0/16".parse().unwrap(), true),
                ("10.66.0.0/16".parse().unwrap(), false)
            ]
        );
    }

    #[test]
    fn felix_configuration_reaches_the_rules() {
        let mut state = ClusterState::default();
        let mut spec = IPPoolSpec::new("10.65.0.0/16".parse().unwrap());
        spec.nat_outgoing = true;
        state.pools.insert("a".into(), IPPool::new("a", spec));
        state.felix_configs.insert(
            "node.n1".into(),
            serde_json::json!({"spec": {"natOutgoingAddress": "192.0.2.7",
                                        "natOutgoingExclusions": "IPPoolsAndHostIPs"}}),
        );
        let s = nat_settings(&state, "n1");
        assert_eq!(s.nat_outgoing_address, Some("192.0.2.7".parse().unwrap()));
        assert_eq!(s.exclusions, NatExclusions::IpPoolsAndHostIps);
        // Another node does not take node.n1's settings.
        assert_eq!(nat_settings(&state, "n2").nat_outgoing_address, None);
    }
}
