//! From the datastore view to Calyx's nftables rules: natOutgoing per IP pool, and the accept
//! rules for workload and tunnel traffic in the forward path (felix's [`calyx_felix::rules`]
//! writes them). Pool changes take effect live: every change of the pools recomputes the
//! settings, and felix's rules engine writes the difference (set elements) in one transaction.

use std::time::Duration;

use calyx_felix::rules::calyx::{self, NatSettings};
use calyx_felix::rules::{RulesConfig, RulesEngine, RulesHandle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::cluster::ClusterState;

/// The natOutgoing settings this node applies. Like Felix's masquerade manager: every pool
/// (disabled ones too, since their addresses may still be in use) is "inside"; traffic from a
/// `natOutgoing` pool to anything outside every pool is masqueraded.
pub fn nat_settings(state: &ClusterState) -> NatSettings {
    NatSettings {
        pools: state
            .pools
            .values()
            .map(|p| (p.spec.cidr, p.spec.nat_outgoing))
            .collect(),
        accept_in_iptables_forward: true,
        ..NatSettings::default()
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
pub fn feed(rules: &RulesHandle, state: &ClusterState, sent: &mut Option<NatSettings>) {
    let settings = nat_settings(state);
    if sent.as_ref() != Some(&settings) {
        rules.set_desired(calyx::ruleset(&settings));
        *sent = Some(settings);
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
        let s = nat_settings(&state);
        assert_eq!(
            s.pools,
            vec![
                ("10.65.0.0/16".parse().unwrap(), true),
                ("10.66.0.0/16".parse().unwrap(), false)
            ]
        );
    }
}
