//! BGP for the node daemon (backend `bird`): which peers this node has (full mesh, BGPPeer
//! resources, route reflector clusters), what it originates (its blocks and the service
//! ranges), and the speaker that makes it so, fed to the dataplane as best routes.
//!
//! [`plan()`] (in `plan.rs`, the translation of Calico's resources as confd renders them) is
//! pure: the datastore snapshot and the resolved passwords in, the wanted BGP setup out;
//! `tests.rs` checks it rule by rule. [`Bgp`] applies plans to a running [`Speaker`],
//! restarting it only when the global settings (AS, router ID, listen address) change.

mod filters;
mod plan;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_v6;

use std::time::{Duration, Instant};

use calyx_bgp::{BestRouteChange, GlobalConfig, PeerConfig, PeerLabel, Speaker, State};
use calyx_datastore::resources::CommunityValue;
use calyx_proto::{Community, LargeCommunity, PathAttributes};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::status::PeerStatus;
use super::tasks::BEST_ROUTE_FEED;

pub use filters::FilterProblem;
pub(crate) use plan::applies_to;
pub use plan::{plan, static_routes, Plan};

/// The BGPFilters the peerings of node `me` name that do not exist, or whose rules Calyx
/// skips (see `filters.rs`); empty when the node is not known yet.
pub fn filter_problems(state: &crate::cluster::ClusterState, me: &str) -> Vec<FilterProblem> {
    let Some(node) = state.nodes.get(me) else {
        return Vec::new();
    };
    filters::problems(
        &state.bgp_peers,
        &state.bgp_filters,
        me,
        node,
        plan::selects,
    )
}

/// The path attributes of an originated prefix: ORIGIN IGP and its communities
/// (`prefixAdvertisements`), standard and large ones in their own attributes.
fn attributes(communities: &[CommunityValue]) -> Option<PathAttributes> {
    if communities.is_empty() {
        return None;
    }
    let mut attrs = PathAttributes::default();
    for c in communities {
        match *c {
            CommunityValue::Standard(asn, value) => {
                attrs.communities.push(Community::new(asn, value));
            }
            CommunityValue::Large(global_admin, local_data1, local_data2) => {
                attrs.large_communities.push(LargeCommunity {
                    global_admin,
                    local_data1,
                    local_data2,
                });
            }
        }
    }
    Some(attrs)
}

/// The running speaker and what was last handed to it.
pub struct Bgp {
    speaker: Option<Speaker>,
    stop: CancellationToken,
    applied: Option<Plan>,
    /// The global settings the running speaker was started with.
    running_global: Option<GlobalConfig>,
    /// The best-route feed of a speaker started since the last [`Bgp::take_feed`].
    new_feed: Option<mpsc::Receiver<BestRouteChange>>,
    restarting: bool,
    graceful_restart: bool,
    hold_time: u16,
    /// Set when the last [`Bgp::apply`] could not start the speaker or set its peers: the
    /// daemon applies the plan again at this time even if nothing in the datastore changed.
    retry_at: Option<Instant>,
    /// The speaker's [`Speaker::status_digest`] (`None` inside: no speaker) at the last
    /// [`Bgp::refresh`]; `None` until then and after anything that changes the status
    /// without moving the digest (a new speaker, a new plan).
    published: Option<Option<u64>>,
}

/// How soon a failed [`Bgp::apply`] is tried again (e.g. the port still held by a process
/// that is going away).
const APPLY_RETRY: Duration = Duration::from_secs(2);

impl Bgp {
    /// No speaker yet; `restarting` sets the graceful-restart R bit on the first start (we
    /// came back within the restart time and kept our routes).
    /// `hold_time` is offered to every peer.
    pub fn new(
        stop: CancellationToken,
        restarting: bool,
        graceful_restart: bool,
        hold_time: u16,
    ) -> Bgp {
        Bgp {
            speaker: None,
            stop,
            applied: None,
            running_global: None,
            new_feed: None,
            restarting,
            graceful_restart,
            hold_time,
            retry_at: None,
            published: None,
        }
    }

    /// A failed [`Bgp::apply`] is due to be tried again.
    pub fn retry_due(&self) -> bool {
        self.retry_at.is_some_and(|t| Instant::now() >= t)
    }

    /// Makes the speaker match `plan`: a new global setup restarts it; peers and originated
    /// prefixes are changed in place.
    pub async fn apply(&mut self, plan: Plan) {
        if self.applied.as_ref() == Some(&plan) {
            return;
        }
        // The peers' types (route-reflector client) come from the plan.
        self.published = None;
        let restart = match (&self.speaker, &self.running_global) {
            (Some(_), Some(running)) => running != &plan.global,
            _ => true,
        };
        if restart {
            if let Some(old) = self.speaker.take() {
                info!("BGP global settings changed; restarting the speaker");
                old.shutdown(false).await;
            }
            let mut global = plan.global.clone();
            global.restarting = std::mem::take(&mut self.restarting);
            match Speaker::start(global, self.stop.child_token()).await {
                Ok(speaker) => {
                    match speaker.subscribe(BEST_ROUTE_FEED).await {
                        Ok(feed) => self.new_feed = Some(feed),
                        Err(e) => warn!(error = %e, "cannot subscribe to best routes"),
                    }
                    self.speaker = Some(speaker);
                    self.running_global = Some(plan.global.clone());
                    self.applied = None;
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?APPLY_RETRY, "cannot start the BGP speaker");
                    self.retry_at = Some(Instant::now() + APPLY_RETRY);
                    return;
                }
            }
        }
        let Some(speaker) = &self.speaker else { return };
        let previous = self.applied.take();
        let mut peers: Vec<PeerConfig> = plan.peers.values().cloned().collect();
        for p in &mut peers {
            p.graceful_restart = self.graceful_restart;
            p.hold_time = self.hold_time;
        }
        if previous.as_ref().map(|p| &p.peers) != Some(&plan.peers) {
            if let Err(e) = speaker.set_peers(peers).await {
                warn!(error = %e, retry_in = ?APPLY_RETRY, "cannot update BGP peers");
                self.retry_at = Some(Instant::now() + APPLY_RETRY);
                return;
            }
        }
        let before = previous.map(|p| p.originate).unwrap_or_default();
        for (prefix, communities) in &plan.originate {
            if before.get(prefix) == Some(communities) {
                continue;
            }
            // Originating again replaces the attributes (communities changed).
            if let Err(e) = speaker.originate(*prefix, attributes(communities)).await {
                warn!(error = %e, %prefix, "cannot originate");
            }
        }
        for prefix in before.keys().filter(|p| !plan.originate.contains_key(p)) {
            if let Err(e) = speaker.withdraw(*prefix).await {
                warn!(error = %e, %prefix, "cannot withdraw");
            }
        }
        self.applied = Some(plan);
        self.retry_at = None;
    }

    /// The best-route feed of a newly started speaker, once: the resolver drains it.
    pub fn take_feed(&mut self) -> Option<mpsc::Receiver<BestRouteChange>> {
        self.new_feed.take()
    }

    /// Publishes the running speaker's lookup handle and peers for the looking glass
    /// ([`crate::lookingglass`]; 503 answers while no speaker runs) and returns the peers for
    /// `calyx node status`, when anything changed since the last call: `None` when nothing
    /// did. Called at every tick of the main loop; the digest keeps an idle node from copying
    /// and formatting every peer's status ten times a second.
    pub fn refresh(&mut self, view: &crate::lookingglass::SharedBgp) -> Option<Vec<PeerStatus>> {
        let digest = self.speaker.as_ref().map(Speaker::status_digest);
        if self.published == Some(digest) {
            return None;
        }
        self.published = Some(digest);
        let (lookup, snapshot) = match &self.speaker {
            Some(s) => (Some(s.lookup_handle()), s.status()),
            None => (None, Vec::new()),
        };
        let peers = snapshot.iter().map(|s| self.peer_status(s)).collect();
        let mut v = view.write().unwrap_or_else(|p| p.into_inner());
        v.lookup = lookup;
        v.peers = snapshot;
        v.taken = Instant::now();
        Some(peers)
    }

    /// One peer as `calyx node status` shows it.
    fn peer_status(&self, s: &calyx_bgp::PeerStatus) -> PeerStatus {
        let rr_client = self
            .applied
            .as_ref()
            .and_then(|p| p.peers.get(&s.address))
            .is_some_and(|p| p.route_reflector_client);
        PeerStatus {
            address: s.address.to_string(),
            peer_type: match (rr_client, s.label) {
                (true, _) => "route reflector client",
                (false, PeerLabel::Mesh) => "node-to-node mesh",
                (false, PeerLabel::Global) => "global",
                (false, PeerLabel::NodeSpecific) => "node specific",
            }
            .to_string(),
            state: if s.state == State::Established {
                "up"
            } else {
                "start"
            }
            .to_string(),
            info: match &s.last_error {
                Some(e) if s.state != State::Established => format!("{:?} {e}", s.state),
                _ => format!("{:?}", s.state),
            },
            since: s
                .since
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            prefixes_received: s.prefixes_received,
            prefixes_advertised: s.prefixes_advertised,
            bfd: s.bfd.map(|b| super::status::BfdStatus {
                state: b.snapshot.state.to_string(),
                detect_ms: b.snapshot.detect_time_us / 1000,
                failures: b.failures,
            }),
        }
    }

    /// Stops the speaker: with graceful restart, close without a NOTIFICATION so that peers
    /// keep our routes while we restart; otherwise a Cease to every peer.
    pub async fn shutdown(self) {
        if let Some(speaker) = self.speaker {
            speaker.shutdown(self.graceful_restart).await;
        }
    }
}
