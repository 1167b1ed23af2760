//! The daemon's status: one snapshot type served as JSON on `/status`, rendered as Prometheus
//! text on `/metrics`, and printed by `calyx node status` in calicoctl's layout.

use serde::{Deserialize, Serialize};

/// One BGP peer as `calyx node status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer's address.
    pub address: String,
    /// `node-to-node mesh`, `global`, `node specific` or `route reflector client`.
    pub peer_type: String,
    /// `up`, `start`, `connect`, ... (BIRD's vocabulary, as calicoctl shows it).
    pub state: String,
    /// Session state name (`Established`, `Active`, ...).
    pub info: String,
    /// When the state last changed, seconds since the Unix epoch.
    pub since: u64,
    /// Prefixes received from the peer.
    pub prefixes_received: u64,
    /// Prefixes advertised to the peer.
    pub prefixes_advertised: u64,
    /// The peer's BFD session, when it runs BFD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdStatus>,
}

/// A peer's BFD session as `calyx node status` and the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdStatus {
    /// `Up`, `Down`, `Init` or `AdminDown`.
    pub state: String,
    /// The Detection Time in force, ms (0 before anything was received).
    pub detect_ms: u64,
    /// Failures detected (Up -> Down on a dead path) since the peer was configured.
    pub failures: u64,
}

/// The reconciler's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataplaneStatus {
    /// Routes wanted.
    pub routes_desired: u64,
    /// Routes in the kernel as wanted.
    pub routes_programmed: u64,
    /// Routes not yet tried.
    pub routes_pending: u64,
    /// Routes whose last attempt failed.
    pub routes_failed: u64,
    /// Full resyncs done.
    pub resyncs: u64,
    /// Duration of the last full resync, seconds.
    pub last_resync_seconds: f64,
    /// Routes repaired after someone else changed them.
    pub drift_repairs: u64,
    /// Durations of the full resyncs seen so far.
    #[serde(default)]
    pub resync_histogram: Histogram,
}

/// Upper bounds (seconds) of the resync duration histogram's buckets.
pub const RESYNC_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// A Prometheus-style cumulative histogram.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Observations at or below each bound of [`RESYNC_BUCKETS`].
    pub buckets: Vec<u64>,
    /// Sum of the observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&mut self, value: f64) {
        if self.buckets.len() != RESYNC_BUCKETS.len() {
            self.buckets = vec![0; RESYNC_BUCKETS.len()];
        }
        for (bound, n) in RESYNC_BUCKETS.iter().zip(self.buckets.iter_mut()) {
            if value <= *bound {
                *n += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }
}

/// IPAM figures for this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamStatus {
    /// Blocks affine to this node.
    pub blocks: u64,
    /// Addresses in use in those blocks.
    pub addresses_in_use: u64,
    /// Addresses in those blocks.
    pub addresses_total: u64,
}

/// Everything `/status` serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node name.
    pub node: String,
    /// Calyx version.
    pub version: String,
    /// Networking backend (`bird`, `vxlan`, `none`).
    pub backend: String,
    /// Start time, seconds since the Unix epoch.
    pub started: u64,
    /// The node's IPv4 address with prefix length.
    pub ipv4: Option<String>,
    /// The node's IPv6 address with prefix length.
    pub ipv6: Option<String>,
    /// The datastore snapshot is loaded and the watch is running.
    pub datastore_synced: bool,
    /// The datastore revision last applied.
    pub datastore_revision: i64,
    /// Ready by calico-node's rule.
    pub ready: bool,
    /// BGP peers.
    pub peers: Vec<PeerStatus>,
    /// Reconciler figures.
    pub dataplane: DataplaneStatus,
    /// Best routes learned over BGP (the RIB as the dataplane sees it).
    #[serde(default)]
    pub bgp_rib_routes: u64,
    /// IPAM figures.
    pub ipam: IpamStatus,
    /// nftables rules (natOutgoing, forwarding).
    #[serde(default)]
    pub rules: RulesStatus,
    /// Garbage collection of leaked addresses and stale endpoints ([`crate::gc`]).
    #[serde(default)]
    pub gc: GcStatus,
    /// BGP passwords that could not be read from their Secret ([`crate::secrets`]).
    #[serde(default)]
    pub bgp_secrets: Vec<crate::secrets::Problem>,
    /// BGPFilters named by this node's peerings that do not exist or have rules Calyx skips
    /// ([`crate::bgp::filter_problems`]).
    #[serde(default)]
    pub bgp_filters: Vec<crate::bgp::FilterProblem>,
    /// Network policy ([`crate::policy`]).
    #[serde(default)]
    pub policy: PolicyStatus,
}

/// The network policy task's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// The policy rules engine runs (it needs nf_tables).
    pub enabled: bool,
    /// This node's workloads that have policy chains.
    pub endpoints: u64,
    /// The rules engine of table `inet calyx-policy`.
    pub rules: RulesStatus,
    /// The datastore watch's last error, until it reads again.
    pub last_error: Option<String>,
    /// Stored policy objects and WorkloadEndpoints that could not be decoded and are left out
    /// (each logged once when read).
    #[serde(default)]
    pub undecodable_objects: u64,
}

/// The garbage collector's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcStatus {
    /// Scans done.
    pub scans: u64,
    /// Addresses freed since start.
    pub addresses_freed: u64,
    /// WorkloadEndpoints removed since start.
    pub endpoints_removed: u64,
    /// Handles and endpoints seen leaked or stale at the last scan, still in their grace.
    pub waiting: u64,
    /// The last scan's error, until a scan succeeds.
    pub last_error: Option<String>,
    /// Scans are skipped: the datastore is locked for a migration (`datastoreReady: false`).
    #[serde(default)]
    pub paused: bool,
}

/// The nftables rules engine's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RulesStatus {
    /// The kernel matched the desired rules at the last check.
    pub in_sync: bool,
    /// Transactions written.
    pub transactions: u64,
    /// Transactions that repaired a change someone else made to Calyx's rules.
    pub repairs: u64,
    /// The last error, until a check succeeds.
    pub last_error: Option<String>,
}

/// Prometheus text exposition of a status snapshot.
pub fn metrics(status: &NodeStatus) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, samples: &[(String, f64)]| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    metric(
        "calyx_build_info",
        "Calyx build information.",
        "gauge",
        &[(format!("{{version=\"{}\"}}", esc(&status.version)), 1.0)],
    );
    metric(
        "calyx_ready",
        "1 when the node is ready (datastore synced, BGP ready).",
        "gauge",
        &[(String::new(), f64::from(u8::from(status.ready)))],
    );
    metric(
        "calyx_datastore_synced",
        "1 when the datastore snapshot is loaded and watched.",
        "gauge",
        &[(String::new(), f64::from(u8::from(status.datastore_synced)))],
    );
    let mut by_state: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for p in &status.peers {
        *by_state.entry(p.info.as_str()).or_default() += 1;
    }
    metric(
        "calyx_bgp_sessions",
        "BGP sessions by state.",
        "gauge",
        &by_state
            .iter()
            .map(|(s, n)| (format!("{{state=\"{}\"}}", esc(s)), *n as f64))
            .collect::<Vec<_>>(),
    );
    metric(
        "calyx_bgp_prefixes_received",
        "Prefixes received per peer.",
        "gauge",
        &status
            .peers
            .iter()
            .map(|p| {
                (
                    format!("{{peer=\"{}\"}}", esc(&p.address)),
                    p.prefixes_received as f64,
                )
            })
            .collect::<Vec<_>>(),
    );
    metric(
        "calyx_bgp_prefixes_advertised",
        "Prefixes advertised per peer.",
        "gauge",
        &status
            .peers
            .iter()
            .map(|p| {
                (
                    format!("{{peer=\"{}\"}}", esc(&p.address)),
                    p.prefixes_advertised as f64,
                )
            })
            .collect::<Vec<_>>(),
    );
    let bfd: Vec<(String, &BfdStatus)> = status
        .peers
        .iter()
        .filter_map(|p| Some((format!("{{peer=\"{}\"}}", esc(&p.address)), p.bfd.as_ref()?)))
        .collect();
    metric(
        "calyx_bfd_session_up",
        "1 when the peer's BFD session is Up (peers that run BFD).",
        "gauge",
        &bfd.iter()
            .map(|(l, b)| (l.clone(), f64::from(u8::from(b.state == "Up"))))
            .collect::<Vec<_>>(),
    );
    metric(
        "calyx_bfd_failures_total",
        "Path failures BFD detected per peer (each took the BGP session down).",
        "counter",
        &bfd.iter()
            .map(|(l, b)| (l.clone(), b.failures as f64))
            .collect::<Vec<_>>(),
    );
    metric(
        "calyx_bgp_secrets_missing",
        "BGP passwords referenced by the configuration whose Secret file cannot be used.",
        "gauge",
        &[(String::new(), status.bgp_secrets.len() as f64)],
    );
    metric(
        "calyx_bgp_filter_problems",
        "BGPFilters named by this node's peerings that do not exist, or rules of them skipped.",
        "gauge",
        &[(String::new(), status.bgp_filters.len() as f64)],
    );
    let gc = &status.gc;
    metric(
        "calyx_ipam_gc_addresses_freed_total",
        "Leaked addresses of this node freed by the garbage collector.",
        "counter",
        &[(String::new(), gc.addresses_freed as f64)],
    );
    metric(
        "calyx_ipam_gc_endpoints_removed_total",
        "WorkloadEndpoints of this node removed because their interface is gone.",
        "counter",
        &[(String::new(), gc.endpoints_removed as f64)],
    );
    metric(
        "calyx_ipam_gc_waiting",
        "Leaked addresses' handles and stale endpoints waiting for their grace period.",
        "gauge",
        &[(String::new(), gc.waiting as f64)],
    );
    metric(
        "calyx_ipam_gc_paused",
        "1 while the collector waits for the datastore to be unlocked after a migration.",
        "gauge",
        &[(String::new(), f64::from(u8::from(gc.paused)))],
    );
    let d = &status.dataplane;
    metric(
        "calyx_dataplane_routes",
        "Routes by reconciliation state.",
        "gauge",
        &[
            ("{state=\"desired\"}".into(), d.routes_desired as f64),
            ("{state=\"programmed\"}".into(), d.routes_programmed as f64),
            ("{state=\"pending\"}".into(), d.routes_pending as f64),
            ("{state=\"failed\"}".into(), d.routes_failed as f64),
        ],
    );
    metric(
        "calyx_dataplane_resyncs_total",
        "Full dataplane resyncs.",
        "counter",
        &[(String::new(), d.resyncs as f64)],
    );
    let h = &d.resync_histogram;
    let mut samples: Vec<(String, f64)> = RESYNC_BUCKETS
        .iter()
        .enumerate()
        .map(|(i, le)| {
            (
                format!("_bucket{{le=\"{le}\"}}"),
                h.buckets.get(i).copied().unwrap_or(0) as f64,
            )
        })
        .collect();
    samples.push(("_bucket{le=\"+Inf\"}".into(), h.count as f64));
    samples.push(("_sum".into(), h.sum));
    samples.push(("_count".into(), h.count as f64));
    metric(
        "calyx_dataplane_resync_duration_seconds",
        "Durations of full dataplane resyncs.",
        "histogram",
        &samples,
    );
    metric(
        "calyx_bgp_rib_routes",
        "Best routes learned over BGP.",
        "gauge",
        &[(String::new(), status.bgp_rib_routes as f64)],
    );
    metric(
        "calyx_dataplane_last_resync_seconds",
        "Duration of the last full resync.",
        "gauge",
        &[(String::new(), d.last_resync_seconds)],
    );
    metric(
        "calyx_dataplane_drift_repairs_total",
        "Routes put back after someone else changed them.",
        "counter",
        &[(String::new(), d.drift_repairs as f64)],
    );
    metric(
        "calyx_ipam_blocks",
        "IPAM blocks affine to this node.",
        "gauge",
        &[(String::new(), status.ipam.blocks as f64)],
    );
    metric(
        "calyx_ipam_addresses_in_use",
        "Addresses in use in this node's blocks.",
        "gauge",
        &[(String::new(), status.ipam.addresses_in_use as f64)],
    );
    let r = &status.rules;
    metric(
        "calyx_rules_in_sync",
        "1 when Calyx's nftables rules matched the desired ones at the last check.",
        "gauge",
        &[(String::new(), f64::from(u8::from(r.in_sync)))],
    );
    metric(
        "calyx_rules_transactions_total",
        "nf_tables transactions written.",
        "counter",
        &[(String::new(), r.transactions as f64)],
    );
    metric(
        "calyx_rules_repairs_total",
        "nf_tables transactions that repaired Calyx's rules after someone else changed them.",
        "counter",
        &[(String::new(), r.repairs as f64)],
    );
    let p = &status.policy;
    metric(
        "calyx_policy_rules_in_sync",
        "1 when the network policy rules (table inet calyx-policy) matched the desired ones at the last check.",
        "gauge",
        &[(String::new(), f64::from(u8::from(p.rules.in_sync)))],
    );
    metric(
        "calyx_policy_endpoints",
        "This node's workloads with policy chains.",
        "gauge",
        &[(String::new(), p.endpoints as f64)],
    );
    metric(
        "calyx_policy_undecodable_objects",
        "Stored policy objects and WorkloadEndpoints left out because they do not decode.",
        "gauge",
        &[(String::new(), p.undecodable_objects as f64)],
    );
    metric(
        "calyx_policy_transactions_total",
        "nf_tables transactions written for network policy.",
        "counter",
        &[(String::new(), p.rules.transactions as f64)],
    );
    out
}

/// calicoctl's `node status` layout.
pub fn render(status: &NodeStatus) -> String {
    let mut out = String::from("Calyx process is running.\n\n");
    for (family, v6) in [("IPv4", false), ("IPv6", true)] {
        let peers: Vec<&PeerStatus> = status
            .peers
            .iter()
            .filter(|p| p.address.contains(':') == v6)
            .collect();
        if peers.is_empty() {
            out.push_str(&format!("No {family} peers found.\n\n"));
            continue;
        }
        out.push_str(&format!("{family} BGP status\n"));
        let rows: Vec<[String; 5]> = peers
            .iter()
            .map(|p| {
                [
                    p.address.clone(),
                    p.peer_type.clone(),
                    p.state.clone(),
                    since(p.since),
                    match &p.bfd {
                        Some(b) => format!("{} BFD {}", p.info, b.state),
                        None => p.info.clone(),
                    },
                ]
            })
            .collect();
        out.push_str(&box_table(
            ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"],
            &rows,
        ));
        out.push('\n');
    }
    for p in &status.bgp_secrets {
        out.push_str(&format!(
            "BGP password {} (used by {}) unavailable: {}\n",
            p.secret,
            p.used_by.join(", "),
            p.reason
        ));
    }
    for p in &status.bgp_filters {
        out.push_str(&format!(
            "BGPFilter {:?} (used by {}): {}\n",
            p.filter,
            p.used_by.join(", "),
            p.reason
        ));
    }
    let policy = &status.policy;
    for (what, error) in [
        ("datastore", &policy.last_error),
        ("rules", &policy.rules.last_error),
    ] {
        if let Some(e) = error {
            out.push_str(&format!("Network policy ({what}): {e}\n"));
        }
    }
    if policy.undecodable_objects > 0 {
        out.push_str(&format!(
            "Network policy: {} stored object(s) do not decode and are left out (see the log)\n",
            policy.undecodable_objects
        ));
    }
    out
}

/// `HH:MM:SS` (UTC) of a Unix time, or the date when it is not today, like BIRD's `since`.
fn since(secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if secs == 0 {
        return "-".into();
    }
    if now / 86_400 == secs / 86_400 {
        let rem = secs % 86_400;
        format!("{:02}:{:02}:{:02}", rem / 3600, (rem % 3600) / 60, rem % 60)
    } else {
        format!("{}d ago", (now.saturating_sub(secs)) / 86_400)
    }
}

/// The `+---+` boxed table calicoctl prints.
fn box_table<const N: usize>(headers: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = headers.map(str::len);
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .zip(widths.iter())
            .map(|(c, w)| format!("| {c:<w$} "))
            .collect::<String>()
            + "|\n"
    };
    let mut out = rule.clone();
    out.push_str(&line(headers.to_vec()));
    out.push_str(&rule);
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out.push_str(&rule);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_matches_calicoctl_layout() {
        let status = NodeStatus {
            peers: vec![PeerStatus {
                address: "10.0.0.2".into(),
                peer_type: "node-to-node mesh".into(),
                state: "up".into(),
                info: "Established".into(),
                since: 0,
                prefixes_received: 1,
                prefixes_advertised: 1,
                bfd: None,
            }],
            ..NodeStatus::default()
        };
        let out = render(&status);
        assert!(out.starts_with("Calyx process is running.\n\nIPv4 BGP status\n+--------------+"));
        assert!(out.contains("| 10.0.0.2     | node-to-node mesh | up    | -     | Established |"));
        assert!(out.contains("No IPv6 peers found."));
    }

    #[test]
    fn bgp_filter_problems_are_a_status_line_and_a_metric() {
        let status = NodeStatus {
            bgp_filters: vec![crate::bgp::FilterProblem {
                filter: "gone".into(),
                used_by: vec!["BGPPeer \"tor\"".into()],
                reason: "no such BGPFilter; the peering runs as if it were not named".into(),
            }],
            ..NodeStatus::default()
        };
        assert!(render(&status).ends_with(
            "BGPFilter \"gone\" (used by BGPPeer \"tor\"): no such BGPFilter; the peering runs \
             as if it were not named\n"
        ));
        assert!(metrics(&status).contains("calyx_bgp_filter_problems 1\n"));
        assert!(metrics(&NodeStatus::default()).contains("calyx_bgp_filter_problems 0\n"));
    }

    #[test]
    fn missing_bgp_passwords_are_a_status_line_and_a_metric() {
        let status = NodeStatus {
            bgp_secrets: vec![crate::secrets::Problem {
                secret: "bgp/tor".into(),
                used_by: vec!["BGPPeer \"tor\"".into()],
                reason: "/etc/calyx/bgp-secrets/bgp/tor does not exist".into(),
            }],
            ..NodeStatus::default()
        };
        assert!(render(&status).ends_with(
            "BGP password bgp/tor (used by BGPPeer \"tor\") unavailable: \
             /etc/calyx/bgp-secrets/bgp/tor does not exist\n"
        ));
        assert!(metrics(&status).contains("calyx_bgp_secrets_missing 1\n"));
        assert!(metrics(&NodeStatus::default()).contains("calyx_bgp_secrets_missing 0\n"));
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let text = metrics(&NodeStatus {
            version: "0.1.0".into(),
            ..NodeStatus::default()
        });
        for line in text.lines() {
            assert!(
                line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line.starts_with("calyx_"),
                "{line}"
            );
        }
        assert!(text.contains("calyx_build_info{version=\"0.1.0\"} 1"));
    }

    #[test]
    fn resync_histogram_is_cumulative() {
        let mut status = NodeStatus::default();
        status.dataplane.resync_histogram.observe(0.002);
        status.dataplane.resync_histogram.observe(3.0);
        let text = metrics(&status);
        assert!(text.contains("calyx_dataplane_resync_duration_seconds_bucket{le=\"0.001\"} 0"));
        assert!(text.contains("calyx_dataplane_resync_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("calyx_dataplane_resync_duration_seconds_bucket{le=\"10\"} 2"));
        assert!(text.contains("calyx_dataplane_resync_duration_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("calyx_dataplane_resync_duration_seconds_count 2"));
        assert!(text.contains("# TYPE calyx_dataplane_resync_duration_seconds histogram"));
    }
}
