//! BFD settings of BGP peerings (issue 19), shared by `BGPPeer` and `BGPConfiguration`.
//!
//! `failureDetectionMode` (`None`, `BFDIfDirectlyConnected`) is Calico Enterprise's BGPPeer
//! field. The timers are a Calyx addition in the same place, named after the fields of
//! Calico Enterprise's `BFDConfiguration` interfaces (`minimumRecvInterval`,
//! `minimumSendInterval`, `multiplier`); Calyx has no `BFDConfiguration` kind. For the
//! node-to-node mesh, `BGPConfiguration` has `nodeMeshFailureDetectionMode` (like
//! `nodeMeshPassword`, `nodeMeshMaxRestartTime`) and `bfd`, the default timers of every
//! peering of the node.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::GoDuration;
use super::validate::{quoted, Problems};

/// `failureDetectionMode: None`.
pub const FAILURE_DETECTION_NONE: &str = "None";
/// `failureDetectionMode: BFDIfDirectlyConnected`: run BFD when the peer is on a subnet of
/// the node (single hop).
pub const FAILURE_DETECTION_BFD: &str = "BFDIfDirectlyConnected";

/// BFD timers (`bfd:`); unset fields take the defaults, 300 ms x 3.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BfdSpec {
    /// Required minimum interval between received BFD packets (`"300ms"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_recv_interval: Option<GoDuration>,
    /// Desired minimum interval between transmitted BFD packets (`"300ms"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_send_interval: Option<GoDuration>,
    /// Missed intervals before the peer is declared down (1-255, default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<u32>,
    /// Fields Calyx does not model, kept as read and written back unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The default BFD interval (both directions).
pub const BFD_DEFAULT_INTERVAL: Duration = Duration::from_millis(300);
/// The default BFD detect multiplier.
pub const BFD_DEFAULT_MULTIPLIER: u8 = 3;

impl BfdSpec {
    /// (receive interval, send interval, multiplier) with defaults for what is unset.
    pub fn effective(&self) -> (Duration, Duration, u8) {
        (
            self.minimum_recv_interval
                .map_or(BFD_DEFAULT_INTERVAL, |d| d.0),
            self.minimum_send_interval
                .map_or(BFD_DEFAULT_INTERVAL, |d| d.0),
            self.multiplier
                .and_then(|m| u8::try_from(m).ok())
                .filter(|m| *m > 0)
                .unwrap_or(BFD_DEFAULT_MULTIPLIER),
        )
    }
}

/// Whether a failure detection mode asks for BFD (an unknown value, refused on input, does
/// not).
pub fn wants_bfd(mode: Option<&str>) -> bool {
    mode == Some(FAILURE_DETECTION_BFD)
}

/// Checks a `failureDetectionMode`-like field and a `bfd` block.
pub(crate) fn check(
    p: &mut Problems<'_>,
    mode_field: &str,
    mode: Option<&str>,
    bfd: Option<&BfdSpec>,
) {
    if let Some(m) = mode {
        if m != FAILURE_DETECTION_NONE && m != FAILURE_DETECTION_BFD {
            p.push(
                mode_field,
                quoted(m),
                format!("is not one of {FAILURE_DETECTION_NONE}, {FAILURE_DETECTION_BFD}"),
            );
        }
    }
    let Some(b) = bfd else {
        return;
    };
    for (field, v) in [
        ("spec.bfd.minimumRecvInterval", b.minimum_recv_interval),
        ("spec.bfd.minimumSendInterval", b.minimum_send_interval),
    ] {
        if let Some(d) = v {
            let whole_ms = d.0.as_nanos() % 1_000_000 == 0;
            if d.0.is_zero() || !whole_ms || d.0 > Duration::from_secs(60) {
                p.push(
                    field,
                    d,
                    "must be a whole number of milliseconds, from 1ms to 1m",
                );
            }
        }
    }
    if let Some(m) = b.multiplier {
        if !(1..=255).contains(&m) {
            p.push("spec.bfd.multiplier", m, "is out of range 1-255");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Kind;

    #[test]
    fn defaults_and_checks() {
        let b = BfdSpec::default();
        assert_eq!(
            b.effective(),
            (Duration::from_millis(300), Duration::from_millis(300), 3)
        );
        let b: BfdSpec = serde_json::from_str(
            r#"{"minimumRecvInterval":"100ms","minimumSendInterval":"1s","multiplier":5,"idleSendInterval":"1m"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            b.effective(),
            (Duration::from_millis(100), Duration::from_secs(1), 5)
        );
        // Unknown fields are kept.
        let j = serde_json::to_string(&b).unwrap_or_default();
        assert!(j.contains("idleSendInterval"), "{j}");
        let mut p = Problems::new(Kind::BGPPeer, "x");
        check(
            &mut p,
            "spec.failureDetectionMode",
            Some("BFDIfDirectlyConnected"),
            Some(&b),
        );
        assert!(p.errors.is_empty());
        let bad: BfdSpec = serde_json::from_str(
            r#"{"minimumRecvInterval":"0s","minimumSendInterval":"1500us","multiplier":0}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        check(&mut p, "spec.failureDetectionMode", Some("BFD"), Some(&bad));
        let fields: Vec<_> = p.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.failureDetectionMode",
                "spec.bfd.minimumRecvInterval",
                "spec.bfd.minimumSendInterval",
                "spec.bfd.multiplier"
            ]
        );
        assert!(wants_bfd(Some("BFDIfDirectlyConnected")));
        assert!(!wants_bfd(Some("None")) && !wants_bfd(None));
    }
}
