//! The BGP speaker: sessions, RIB, best path, route reflection, graceful restart, policy.
//!
//! Layers, bottom up:
//! * [`fsm`]: the RFC 4271 §8 state machine, Sans-IO (inputs in, outputs out).
//! * [`rib`]: Adj-RIB-In, Loc-RIB (decision process), Adj-RIB-Out (export rules, packing
//!   groups), synchronous and single-owner.
//! * [`policy`]: import/export rules in the shape of Calico's BGPFilter.
//! * `session` (private): the tokio task around one peer's FSM and its TCP connection.
//! * `collision` (private): connection collision detection (RFC 4271 §6.8) for the session.
//! * [`Speaker`]: the embeddable API: peers, originate/withdraw, best-route feed, status.

pub mod attrs;
mod collision;
pub mod config;
pub mod fsm;
pub mod policy;
pub mod rib;
mod session;
pub mod sockopt;
mod speaker;

pub use attrs::{Attrs, Prefix, RouteAttrs};
pub use config::{GlobalConfig, PeerConfig, PeerLabel};
pub use fsm::State;
pub use policy::{
    DefaultAction, MatchOperator, PeerType, Policy, PolicyRule, PrefixMatch, RuleAction,
};
pub use rib::BestRouteChange;
pub use speaker::{Error, PeerStatus, Speaker};
pub use tokio_util::sync::CancellationToken;
