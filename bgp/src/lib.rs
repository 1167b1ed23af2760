//! The BGP speaker: sessions, RIB, best path, route reflection, graceful restart, policy.
//!
//! Layers, bottom up:
//! * [`fsm`]: the RFC 4271 §8 state machine, Sans-IO (inputs in, outputs out).
//! * [`rib`]: Adj-RIB-In, Loc-RIB (decision process), Adj-RIB-Out (export rules, packing
//!   groups), synchronous and single-owner.
//! * [`policy`]: import/export rules in the shape of Calico's BGPFilter.
//! * `session` (private): the tokio task around one peer's FSM and its TCP connection.
//! * `collision` (private): connection collision detection (RFC 4271 §6.8) for the session.
//! * `tasks` (private): the messages between the tasks below, with a drawing of them.
//! * `actor` (private): the RIB task, which owns the [`rib::Rib`] and the peer tasks.
//! * [`Speaker`]: the embeddable API: peers, originate/withdraw, best-route feed, status.

mod actor;
pub mod attrs;
mod collision;
pub mod config;
mod encode;
pub mod fsm;
pub mod policy;
pub mod rib;
mod session;
pub mod sockopt;
mod speaker;
mod tasks;

pub use attrs::{Attrs, Prefix, RouteAttrs};
pub use config::{GlobalConfig, PeerConfig, PeerLabel};
pub use fsm::State;
pub use policy::{
    DefaultAction, MatchOperator, PeerType, Policy, PolicyRule, PrefixMatch, RouteFamily,
    RuleAction, Verdict,
};
pub use rib::{BestRouteChange, PathEntry, RouteEntry, RouteQuery, RouteTable};
pub use speaker::{Error, PeerStatus, RouteLookup, Speaker};
pub use tokio_util::sync::CancellationToken;
