//! The engine's live settings ([`crate::LiveConfig`]): MTUs, route protocol, route source
//! address, resync interval, changed while it runs.

use std::net::IpAddr;

use super::{Engine, Op};
use crate::route::{self, RouteSpec, WriteMode};

/// What a route read from the kernel counts as: its spec, or [`RouteSpec::Unsupported`]
/// (which differs from every desired spec, so it gets rewritten) when it is a unicast route
/// whose source address is not the one configured for its family.
pub(super) fn seen_spec(
    p: &route::ParsedRoute,
    src: (Option<IpAddr>, Option<IpAddr>),
) -> RouteSpec {
    let want_src = if p.key.dst.addr().is_ipv4() {
        src.0
    } else {
        src.1
    };
    match p.spec.clone() {
        Some(RouteSpec::Blackhole) => RouteSpec::Blackhole,
        Some(spec) if p.prefsrc == want_src => spec,
        _ => RouteSpec::Unsupported,
    }
}

impl Engine {
    /// Takes new live settings. An MTU change schedules a device pass (MTUs are set in
    /// place); a new route protocol moves our routes over at once: each route of the old
    /// protocol that is still desired is replaced in place by the same route under the new
    /// protocol (`NLM_F_REPLACE` matches the route's key, not its protocol, so there is no
    /// moment without a route and never two), the others are deleted under the old protocol.
    /// A full pass follows, which reads back the routes of the new protocol.
    pub(crate) fn set_live(&mut self, live: crate::config::LiveConfig) {
        let old = self.cfg.live();
        if live == old {
            return;
        }
        if (live.ipip_mtu, live.vxlan_mtu, live.vxlan_v6_mtu)
            != (old.ipip_mtu, old.vxlan_mtu, old.vxlan_v6_mtu)
        {
            self.need_links = true;
        }
        if live.route_protocol != old.route_protocol {
            // The routes of the old protocol as the kernel holds them now: before the first
            // pass (a restart after the protocol was changed) the cache is still empty.
            match self.dump_routes() {
                Ok(true) => self.prune_failures(),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "route dump before a protocol change"),
            }
            let (mut deletes, mut moves) = (Vec::new(), Vec::new());
            for (k, _) in self.plan.kernel_routes() {
                match self.plan.route(k) {
                    Some(_) => moves.push((*k, Op::Write(WriteMode::Replace))),
                    None => deletes.push((*k, Op::Delete)),
                }
            }
            tracing::info!(
                from = old.route_protocol,
                to = live.route_protocol,
                moved = moves.len(),
                deleted = deletes.len(),
                "route protocol changed"
            );
            // Deletes must carry the old protocol (the kernel matches it), writes the new.
            self.apply(&deletes, false);
            self.cfg.route_protocol = live.route_protocol;
            self.apply(&moves, false);
            self.request_full();
        }
        if (live.route_src_v4, live.route_src_v6) != (old.route_src_v4, old.route_src_v6) {
            // The dump that follows sees every route with another source as differing.
            self.need_dump = true;
            self.check_all = true;
        }
        self.cfg.set_live(live);
    }
}
