//! Applies the live FelixConfiguration settings that are not NAT rules or the VXLAN device's
//! identity: the tunnel MTUs, `deviceRouteProtocol`, `deviceRouteSourceAddress(IPv6)` and
//! `routeRefreshInterval` (to felix's
//! reconciler, [`calyx_felix::ReconcilerHandle::set_live`]) and `logSeverityScreen` (to the
//! daemon's log filter, through the hook the binary installs with [`set_log_level_hook`]).
//! Calyx's own settings win: `CALYX_ROUTE_PROTOCOL` and `CALYX_ROUTE_REFRESH_INTERVAL` when
//! set, and the binary installs no hook when the log level was given explicitly.

use std::sync::OnceLock;
use std::time::Duration;

use calyx_felix::{LiveConfig, ReconcilerHandle};
use tracing::info;

use super::cluster::ClusterState;
use super::config::NodeConfig;
use super::felixconfig::{self, FelixSettings};

/// Felix treats a `routeRefreshInterval` of 0 as "no periodic refresh"; the reconciler needs
/// a finite period, so "off" becomes a day (a resync still runs after every foreign change).
const REFRESH_OFF: Duration = Duration::from_secs(24 * 3600);

type LogHook = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static LOG_HOOK: OnceLock<LogHook> = OnceLock::new();

/// Installs the function that sets the daemon's log level (a tracing level name) while it
/// runs. Without one, `logSeverityScreen` is ignored. Only the first call counts.
pub fn set_log_level_hook(hook: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static) {
    let _ = LOG_HOOK.set(Box::new(hook));
}

/// The reconciler's live settings from the FelixConfiguration settings and the node's own.
pub fn live_config(felix: &FelixSettings, config: &NodeConfig) -> LiveConfig {
    let route_protocol = match felix.device_route_protocol {
        Some(p) if !config.route_protocol_set => p,
        _ => config.route_protocol,
    };
    let route_refresh_interval = match felix.route_refresh_interval {
        Some(d) if !config.route_refresh_interval_set => {
            if d.is_zero() {
                REFRESH_OFF
            } else {
                d
            }
        }
        _ => config.route_refresh_interval,
    };
    LiveConfig {
        route_protocol,
        ipip_mtu: felix.ipip_mtu,
        vxlan_mtu: felix.vxlan_mtu,
        vxlan_v6_mtu: felix.vxlan_mtu_v6,
        route_refresh_interval,
        route_src_v4: felix.device_route_source_v4,
        route_src_v6: felix.device_route_source_v6,
    }
}

/// What was last applied, so that only changes are sent.
#[derive(Debug, Default)]
pub struct Applied {
    live: Option<LiveConfig>,
    log_level: Option<&'static str>,
}

impl Applied {
    /// Applies the settings that changed since the last call.
    pub fn feed(
        &mut self,
        state: &ClusterState,
        config: &NodeConfig,
        reconciler: Option<&ReconcilerHandle>,
    ) {
        let felix = felixconfig::effective(&state.felix_configs, &config.nodename);
        let live = live_config(&felix, config);
        if let Some(rec) = reconciler {
            if self.live != Some(live) {
                info!(?live, "dataplane settings");
                rec.set_live(live);
                self.live = Some(live);
            }
        }
        // Felix's default severity is Info, which is also the daemon's.
        let level = felix.log_severity_screen.unwrap_or("info");
        if self.log_level != Some(level) {
            if let Some(hook) = LOG_HOOK.get() {
                match hook(level) {
                    Ok(()) => info!(level, "log level from FelixConfiguration"),
                    Err(e) => tracing::warn!(error = %e, level, "cannot set the log level"),
                }
            }
            self.log_level = Some(level);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn node_config(protocol_set: bool, refresh_set: bool) -> NodeConfig {
        let mut c = crate::tests::config();
        c.route_protocol = 77;
        c.route_protocol_set = protocol_set;
        c.route_refresh_interval = Duration::from_secs(30);
        c.route_refresh_interval_set = refresh_set;
        c
    }

    #[test]
    fn calyx_settings_win_over_felix_configuration() {
        let felix = FelixSettings {
            device_route_protocol: Some(99),
            route_refresh_interval: Some(Duration::from_secs(10)),
            vxlan_mtu: Some(1400),
            ..Default::default()
        };
        let l = live_config(&felix, &node_config(false, false));
        assert_eq!(l.route_protocol, 99);
        assert_eq!(l.route_refresh_interval, Duration::from_secs(10));
        assert_eq!(l.vxlan_mtu, Some(1400));
        let l = live_config(&felix, &node_config(true, true));
        assert_eq!(l.route_protocol, 77);
        assert_eq!(l.route_refresh_interval, Duration::from_secs(30));
        let l = live_config(&FelixSettings::default(), &node_config(false, false));
        assert_eq!((l.route_protocol, l.vxlan_mtu), (77, None));
        let off = FelixSettings {
            route_refresh_interval: Some(Duration::ZERO),
            ..Default::default()
        };
        let l = live_config(&off, &node_config(false, false));
        assert_eq!(l.route_refresh_interval, REFRESH_OFF);
    }

    #[test]
    fn log_level_goes_to_the_hook_on_change_only() {
        static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        set_log_level_hook(|level| {
            SEEN.lock().unwrap().push(level.to_string());
            Ok(())
        });
        let config = node_config(false, false);
        let mut state = ClusterState::default();
        let mut applied = Applied::default();
        applied.feed(&state, &config, None);
        state.felix_configs.insert(
            "default".into(),
            serde_json::json!({"spec": {"logSeverityScreen": "Debug"}}),
        );
        applied.feed(&state, &config, None);
        applied.feed(&state, &config, None);
        state.felix_configs.clear();
        applied.feed(&state, &config, None);
        assert_eq!(*SEEN.lock().unwrap(), ["info", "debug", "info"]);
    }
}
