//! `calyx node run` configuration: flags that fall back to the environment variables
//! calico-node reads, checked up front so that a bad value stops start-up with one line naming
//! the variable and the value, before anything is written.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use calyx_datastore::resources::{Asn, EncapMode};
use clap::Args;
use ipnet::IpNet;

/// Flags of `calyx node run`; each falls back to calico-node's environment variable.
#[derive(Debug, Args, Clone)]
pub struct NodeRunArgs {
    /// This node's name (default: the hostname).
    #[arg(long, env = "NODENAME")]
    pub nodename: Option<String>,
    /// IPv4 address for BGP and tunnels: `A.B.C.D[/len]`, `autodetect` or `none`.
    #[arg(long, env = "IP", default_value = "autodetect")]
    pub ip: String,
    /// How to find the IPv4 address: first-found, can-reach=DEST, interface=REGEX,
    /// skip-interface=REGEX, cidr=CIDR[,CIDR...].
    #[arg(long, env = "IP_AUTODETECTION_METHOD", default_value = "first-found")]
    pub ip_autodetection_method: String,
    /// IPv6 address: an address[/len], `autodetect` or `none`.
    #[arg(long, env = "IP6", default_value = "none")]
    pub ip6: String,
    /// How to find the IPv6 address (same methods as for IPv4).
    #[arg(long, env = "IP6_AUTODETECTION_METHOD", default_value = "first-found")]
    pub ip6_autodetection_method: String,
    /// This node's AS number (default: the BGPConfiguration's, 64512).
    #[arg(long = "as", env = "AS")]
    pub as_number: Option<String>,
    /// Networking backend: `bird` (BGP), `vxlan` (no BGP) or `none` (policy only: no routes).
    #[arg(long, env = "CALICO_NETWORKING_BACKEND", default_value = "bird")]
    pub networking_backend: String,
    /// BGP router ID: an IPv4 address, or `hash` (derived from the node name).
    #[arg(long, env = "CALICO_ROUTER_ID")]
    pub router_id: Option<String>,
    /// CIDR of the default IPv4 pool created when no pool exists.
    #[arg(long, env = "CALICO_IPV4POOL_CIDR", default_value = "192.168.0.0/16")]
    pub ipv4pool_cidr: String,
    /// Block size of the default IPv4 pool.
    #[arg(long, env = "CALICO_IPV4POOL_BLOCK_SIZE", default_value = "26")]
    pub ipv4pool_block_size: String,
    /// IPIP mode of the default IPv4 pool: Always, CrossSubnet, Never.
    #[arg(long, env = "CALICO_IPV4POOL_IPIP", default_value = "Never")]
    pub ipv4pool_ipip: String,
    /// VXLAN mode of the default IPv4 pool: Always, CrossSubnet, Never.
    #[arg(long, env = "CALICO_IPV4POOL_VXLAN", default_value = "Never")]
    pub ipv4pool_vxlan: String,
    /// NAT outgoing traffic of the default IPv4 pool.
    #[arg(long, env = "CALICO_IPV4POOL_NAT_OUTGOING", default_value = "true")]
    pub ipv4pool_nat_outgoing: String,
    /// Node selector of the default IPv4 pool.
    #[arg(long, env = "CALICO_IPV4POOL_NODE_SELECTOR", default_value = "all()")]
    pub ipv4pool_node_selector: String,
    /// CIDR of the default IPv6 pool (none is created unless set).
    #[arg(long, env = "CALICO_IPV6POOL_CIDR")]
    pub ipv6pool_cidr: Option<String>,
    /// Block size of the default IPv6 pool.
    #[arg(long, env = "CALICO_IPV6POOL_BLOCK_SIZE", default_value = "122")]
    pub ipv6pool_block_size: String,
    /// VXLAN mode of the default IPv6 pool: Always, CrossSubnet, Never.
    #[arg(long, env = "CALICO_IPV6POOL_VXLAN", default_value = "Never")]
    pub ipv6pool_vxlan: String,
    /// NAT outgoing traffic of the default IPv6 pool.
    #[arg(long, env = "CALICO_IPV6POOL_NAT_OUTGOING", default_value = "false")]
    pub ipv6pool_nat_outgoing: String,
    /// Node selector of the default IPv6 pool.
    #[arg(long, env = "CALICO_IPV6POOL_NODE_SELECTOR", default_value = "all()")]
    pub ipv6pool_node_selector: String,
    /// Create no default pools.
    #[arg(long, env = "NO_DEFAULT_POOLS", default_value = "false")]
    pub no_default_pools: String,
    /// Address of the health, metrics and status HTTP endpoint (default 127.0.0.1:9099, the
    /// port then from FelixConfiguration's `healthPort` when that is set).
    #[arg(long, env = "CALYX_HEALTH_LISTEN")]
    pub health_listen: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "CALYX_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Seconds to wait for the datastore at start-up before giving up.
    #[arg(long, env = "CALYX_DATASTORE_WAIT", default_value = "60")]
    pub datastore_wait: String,
    /// Keep kernel routes and let peers keep ours across a restart (BGP graceful restart).
    #[arg(long, env = "CALYX_GRACEFUL_RESTART", default_value = "true")]
    pub graceful_restart: String,
    /// BGP hold time offered to every peer, in seconds (0, or 3-65535; the session uses the
    /// smaller of both sides'). A dead peer's routes go after this long without graceful restart.
    #[arg(long, env = "CALYX_BGP_HOLD_TIME", default_value = "90")]
    pub bgp_hold_time: String,
    /// Where the node name is written for the CNI plugins.
    #[arg(long, env = "CALYX_STATE_DIR", default_value = "/var/lib/calyx")]
    pub state_dir: PathBuf,
    /// Where Kubernetes Secrets holding BGP passwords are mounted: `<dir>/<secret>/<key>`.
    #[arg(
        long,
        env = "CALYX_BGP_SECRETS_DIR",
        default_value = "/etc/calyx/bgp-secrets"
    )]
    pub bgp_secrets_dir: PathBuf,
    /// Route protocol number that marks the routes Calyx owns (Felix uses 80).
    /// When set, it beats FelixConfiguration's `deviceRouteProtocol`.
    #[arg(long, env = "CALYX_ROUTE_PROTOCOL")]
    pub route_protocol: Option<String>,
    /// Seconds between full dataplane resyncs (default 90); when set, it beats
    /// FelixConfiguration's `routeRefreshInterval`.
    #[arg(long, env = "CALYX_ROUTE_REFRESH_INTERVAL")]
    pub route_refresh_interval: Option<String>,
    /// Comma-separated cluster types recorded in ClusterInformation (`k8s,bgp`), as
    /// calico-node's manifests set it; none by default, as in calico-node.
    #[arg(long, env = "CLUSTER_TYPE", default_value = "")]
    pub cluster_type: String,
    /// Grace period before the garbage collector frees a leaked address or removes a stale
    /// WorkloadEndpoint: seconds, or a duration with a unit (`90s`, `15m`, `1h`). Calico's
    /// kube-controllers default, 15 minutes.
    #[arg(long, env = "CALYX_IPAM_GC_GRACE", default_value = "15m")]
    pub ipam_gc_grace: String,
}

/// A configuration value that cannot be used; Display names the variable and the value.
#[derive(Debug, thiserror::Error)]
#[error("{variable}={value:?}: {reason}")]
pub struct ConfigError {
    /// The environment variable (or the flag's equivalent) that holds the value.
    pub variable: &'static str,
    /// The value given.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

fn bad(variable: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// How the node's address is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressSetting {
    /// This address; without a prefix length, the length of the interface that holds it.
    Fixed(IpAddr, Option<u8>),
    /// Found by the autodetection method.
    Autodetect(AutodetectMethod),
    /// No address of this family.
    None,
}

/// calico-node's `IP_AUTODETECTION_METHOD` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutodetectMethod {
    /// The first address on an up interface that is not loopback or a known virtual device.
    FirstFound,
    /// The source address the kernel picks to reach this destination.
    CanReach(String),
    /// The first address on an interface whose name matches one of these regexes.
    Interface(Vec<String>),
    /// The first address on an interface whose name matches none of these regexes.
    SkipInterface(Vec<String>),
    /// The first address inside one of these CIDRs.
    Cidr(Vec<IpNet>),
}

/// Which routing machinery runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// BGP (calico-node's `bird`).
    Bgp,
    /// VXLAN routes computed from the datastore; no BGP.
    Vxlan,
    /// No routes at all.
    None,
}

/// The router ID setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterIdSetting {
    /// The node's IPv4 address (the default).
    NodeAddress,
    /// A fixed ID.
    Fixed(Ipv4Addr),
    /// Derived from a hash of the node name (for IPv6-only nodes).
    Hash,
}

/// The settings of one default pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultPool {
    /// Pool CIDR.
    pub cidr: IpNet,
    /// Block prefix length.
    pub block_size: u8,
    /// IPIP mode.
    pub ipip: EncapMode,
    /// VXLAN mode.
    pub vxlan: EncapMode,
    /// NAT outgoing.
    pub nat_outgoing: bool,
    /// Node selector.
    pub node_selector: String,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Node name.
    pub nodename: String,
    /// IPv4 address setting.
    pub ipv4: AddressSetting,
    /// IPv6 address setting.
    pub ipv6: AddressSetting,
    /// This node's AS, when set.
    pub as_number: Option<Asn>,
    /// The backend.
    pub backend: Backend,
    /// The router ID setting.
    pub router_id: RouterIdSetting,
    /// The default IPv4 pool, unless `NO_DEFAULT_POOLS`.
    pub default_ipv4_pool: Option<DefaultPool>,
    /// The default IPv6 pool, when `CALICO_IPV6POOL_CIDR` is set.
    pub default_ipv6_pool: Option<DefaultPool>,
    /// Health/metrics/status listen address.
    pub health_listen: SocketAddr,
    /// Whether `health_listen` was set (then FelixConfiguration's `healthPort` is ignored).
    pub health_listen_set: bool,
    /// How long to wait for the datastore at start-up.
    pub datastore_wait: Duration,
    /// BGP graceful restart on.
    pub graceful_restart: bool,
    /// BGP hold time offered to peers (seconds).
    pub bgp_hold_time: u16,
    /// State directory for the CNI plugins.
    pub state_dir: PathBuf,
    /// Where the BGP password Secrets are mounted ([`crate::secrets`]).
    pub bgp_secrets_dir: PathBuf,
    /// Route protocol number.
    pub route_protocol: u8,
    /// Whether `route_protocol` was set (then FelixConfiguration cannot change it).
    pub route_protocol_set: bool,
    /// Full resync interval.
    pub route_refresh_interval: Duration,
    /// Whether `route_refresh_interval` was set (then FelixConfiguration cannot change it).
    pub route_refresh_interval_set: bool,
    /// Cluster types for ClusterInformation (`CLUSTER_TYPE`), possibly empty.
    pub cluster_type: String,
    /// Garbage collection grace period.
    pub ipam_gc_grace: Duration,
}

/// Parses a pool mode with the spellings calico-node accepts.
pub fn parse_mode(variable: &'static str, value: &str) -> Result<EncapMode, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "always" | "true" => Ok(EncapMode::Always),
        "crosssubnet" | "cross-subnet" => Ok(EncapMode::CrossSubnet),
        "never" | "off" | "false" | "" => Ok(EncapMode::Never),
        _ => Err(bad(
            variable,
            value,
            "expected Always, CrossSubnet or Never",
        )),
    }
}

/// Parses a boolean as calico-node does (`true`/`false`, also `yes`/`no`, `1`/`0`).
pub fn parse_bool(variable: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" | "" => Ok(false),
        _ => Err(bad(variable, value, "expected true or false")),
    }
}

fn parse_number<T: std::str::FromStr>(
    variable: &'static str,
    value: &str,
    what: &str,
) -> Result<T, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| bad(variable, value, format!("expected {what}")))
}

/// Parses a duration: plain seconds, or a number with a unit `s`, `m` or `h`.
pub fn parse_duration(variable: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let v = value.trim();
    let (number, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => 0,
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|_| scale > 0)
        .and_then(|n| n.checked_mul(scale))
        .map(Duration::from_secs)
        .ok_or_else(|| {
            bad(
                variable,
                value,
                "expected seconds, or a number with s, m or h",
            )
        })
}

/// Parses `IP` / `IP6`.
pub fn parse_address(
    variable: &'static str,
    value: &str,
    method: AutodetectMethod,
    v6: bool,
) -> Result<AddressSetting, ConfigError> {
    let value_trim = value.trim();
    match value_trim.to_ascii_lowercase().as_str() {
        "" | "autodetect" => return Ok(AddressSetting::Autodetect(method)),
        "none" => return Ok(AddressSetting::None),
        _ => {}
    }
    let (addr, len) = match value_trim.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (value_trim, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| {
        bad(
            variable,
            value,
            "expected an address (optionally with /length), autodetect or none",
        )
    })?;
    if ip.is_ipv6() != v6 {
        let family = if v6 { "IPv6" } else { "IPv4" };
        return Err(bad(
            variable,
            value,
            format!("expected an {family} address"),
        ));
    }
    let max = if v6 { 128 } else { 32 };
    let len = match len {
        None => None,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max => Some(n),
            _ => {
                return Err(bad(
                    variable,
                    value,
                    format!("prefix length must be 0-{max}"),
                ))
            }
        },
    };
    Ok(AddressSetting::Fixed(ip, len))
}

/// Parses `IP_AUTODETECTION_METHOD`.
pub fn parse_method(variable: &'static str, value: &str) -> Result<AutodetectMethod, ConfigError> {
    let v = value.trim();
    let list = |rest: &str| -> Vec<String> {
        rest.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let regexes = |rest: &str| -> Result<Vec<String>, ConfigError> {
        let items = list(rest);
        if items.is_empty() {
            return Err(bad(variable, value, "needs at least one interface regex"));
        }
        for r in &items {
            regex::Regex::new(r).map_err(|e| {
                // The regex crate explains over several lines; its last one says what is wrong.
                let text = e.to_string();
                let why = text
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                bad(variable, value, format!("bad regex {r:?}: {}", why.trim()))
            })?;
        }
        Ok(items)
    };
    if v.is_empty() || v == "first-found" {
        Ok(AutodetectMethod::FirstFound)
    } else if let Some(dest) = v.strip_prefix("can-reach=") {
        if dest.trim().is_empty() {
            return Err(bad(variable, value, "can-reach needs a destination"));
        }
        Ok(AutodetectMethod::CanReach(dest.trim().to_string()))
    } else if let Some(rest) = v.strip_prefix("interface=") {
        Ok(AutodetectMethod::Interface(regexes(rest)?))
    } else if let Some(rest) = v.strip_prefix("skip-interface=") {
        Ok(AutodetectMethod::SkipInterface(regexes(rest)?))
    } else if let Some(rest) = v.strip_prefix("cidr=") {
        let cidrs = list(rest)
            .iter()
            .map(|c| {
                c.parse::<IpNet>()
                    .map_err(|_| bad(variable, value, format!("bad CIDR {c:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if cidrs.is_empty() {
            return Err(bad(variable, value, "cidr= needs at least one CIDR"));
        }
        Ok(AutodetectMethod::Cidr(cidrs))
    } else {
        Err(bad(
            variable,
            value,
            "expected first-found, can-reach=DEST, interface=REGEX, skip-interface=REGEX or cidr=CIDR,...",
        ))
    }
}

#[allow(clippy::too_many_arguments)] // One per pool setting, each named at the call.
fn parse_pool(
    cidr_var: &'static str,
    cidr: &str,
    size_var: &'static str,
    size: &str,
    ipip: EncapMode,
    vxlan: EncapMode,
    nat_outgoing: bool,
    node_selector: &str,
    v6: bool,
) -> Result<DefaultPool, ConfigError> {
    let net: IpNet = cidr
        .trim()
        .parse()
        .map_err(|_| bad(cidr_var, cidr, "expected a CIDR like 192.168.0.0/16"))?;
    if net.trunc() != net {
        return Err(bad(cidr_var, cidr, "host bits are set"));
    }
    if matches!(net, IpNet::V6(_)) != v6 {
        let family = if v6 { "IPv6" } else { "IPv4" };
        return Err(bad(cidr_var, cidr, format!("expected an {family} CIDR")));
    }
    let block_size: u8 = parse_number(size_var, size, "a prefix length")?;
    let (lo, hi) = if v6 { (116, 128) } else { (20, 32) };
    if !(lo..=hi).contains(&block_size) || block_size < net.prefix_len() {
        return Err(bad(
            size_var,
            size,
            format!(
                "must be {lo}-{hi} and not shorter than the pool's /{}",
                net.prefix_len()
            ),
        ));
    }
    Ok(DefaultPool {
        cidr: net,
        block_size,
        ipip,
        vxlan,
        nat_outgoing,
        node_selector: node_selector.to_string(),
    })
}

impl NodeRunArgs {
    /// Checks every value; the first bad one is the error.
    pub fn resolve(&self) -> Result<NodeConfig, ConfigError> {
        let nodename = match &self.nodename {
            Some(n) if !n.trim().is_empty() => n.trim().to_string(),
            _ => hostname(),
        };
        if calyx_datastore::resources::check_dns1123_subdomain(&nodename).is_err() {
            return Err(bad(
                "NODENAME",
                &nodename,
                "must be a lower-case DNS-1123 name",
            ));
        }
        let method4 = parse_method("IP_AUTODETECTION_METHOD", &self.ip_autodetection_method)?;
        let method6 = parse_method("IP6_AUTODETECTION_METHOD", &self.ip6_autodetection_method)?;
        let ipv4 = parse_address("IP", &self.ip, method4, false)?;
        let ipv6 = parse_address("IP6", &self.ip6, method6, true)?;
        let as_number = match &self.as_number {
            None => None,
            Some(s) if s.trim().is_empty() => None,
            Some(s) => Some(
                s.trim()
                    .parse::<Asn>()
                    .map_err(|_| bad("AS", s, "expected an AS number 1-4294967295"))?,
            ),
        };
        let backend = match self.networking_backend.trim().to_ascii_lowercase().as_str() {
            "bird" | "bgp" => Backend::Bgp,
            "vxlan" => Backend::Vxlan,
            "none" => Backend::None,
            _ => {
                return Err(bad(
                    "CALICO_NETWORKING_BACKEND",
                    &self.networking_backend,
                    "expected bird, vxlan or none",
                ))
            }
        };
        let router_id = match self.router_id.as_deref().map(str::trim) {
            None | Some("") => RouterIdSetting::NodeAddress,
            Some("hash") => RouterIdSetting::Hash,
            Some(s) => RouterIdSetting::Fixed(
                s.parse()
                    .map_err(|_| bad("CALICO_ROUTER_ID", s, "expected an IPv4 address or hash"))?,
            ),
        };
        // A BGP router ID has 4 octets, even for IPv6 sessions: a node without an IPv4
        // address needs one given (Calico's advice for IPv6-only clusters: `hash`).
        if backend == Backend::Bgp
            && router_id == RouterIdSetting::NodeAddress
            && ipv4 == AddressSetting::None
        {
            return Err(bad(
                "CALICO_ROUTER_ID",
                self.router_id.as_deref().unwrap_or(""),
                "must be set (an IPv4 address, or hash) when the node has no IPv4 address (IP=none) and runs BGP",
            ));
        }
        let no_default_pools = parse_bool("NO_DEFAULT_POOLS", &self.no_default_pools)?;
        let ipip = parse_mode("CALICO_IPV4POOL_IPIP", &self.ipv4pool_ipip)?;
        let vxlan = parse_mode("CALICO_IPV4POOL_VXLAN", &self.ipv4pool_vxlan)?;
        if ipip != EncapMode::Never && vxlan != EncapMode::Never {
            return Err(bad(
                "CALICO_IPV4POOL_VXLAN",
                &self.ipv4pool_vxlan,
                "IPIP and VXLAN cannot both be enabled (CALICO_IPV4POOL_IPIP is set too)",
            ));
        }
        let nat4 = parse_bool("CALICO_IPV4POOL_NAT_OUTGOING", &self.ipv4pool_nat_outgoing)?;
        check_selector(
            "CALICO_IPV4POOL_NODE_SELECTOR",
            &self.ipv4pool_node_selector,
        )?;
        let v4pool = parse_pool(
            "CALICO_IPV4POOL_CIDR",
            &self.ipv4pool_cidr,
            "CALICO_IPV4POOL_BLOCK_SIZE",
            &self.ipv4pool_block_size,
            ipip,
            vxlan,
            nat4,
            &self.ipv4pool_node_selector,
            false,
        )?;
        let v6pool = match &self.ipv6pool_cidr {
            Some(cidr) if !cidr.trim().is_empty() => {
                let vxlan6 = parse_mode("CALICO_IPV6POOL_VXLAN", &self.ipv6pool_vxlan)?;
                let nat6 = parse_bool("CALICO_IPV6POOL_NAT_OUTGOING", &self.ipv6pool_nat_outgoing)?;
                check_selector(
                    "CALICO_IPV6POOL_NODE_SELECTOR",
                    &self.ipv6pool_node_selector,
                )?;
                Some(parse_pool(
                    "CALICO_IPV6POOL_CIDR",
                    cidr,
                    "CALICO_IPV6POOL_BLOCK_SIZE",
                    &self.ipv6pool_block_size,
                    EncapMode::Never,
                    vxlan6,
                    nat6,
                    &self.ipv6pool_node_selector,
                    true,
                )?)
            }
            _ => None,
        };
        let health_text = self.health_listen.as_deref().unwrap_or("127.0.0.1:9099");
        let health_listen = health_text
            .trim()
            .parse()
            .map_err(|_| bad("CALYX_HEALTH_LISTEN", health_text, "expected ADDRESS:PORT"))?;
        // Logging is set up from the raw value before this runs; checked here all the same.
        match self.log_format.trim().to_ascii_lowercase().as_str() {
            "text" | "" | "json" => {}
            _ => {
                return Err(bad(
                    "CALYX_LOG_FORMAT",
                    &self.log_format,
                    "expected text or json",
                ))
            }
        };
        let wait: u64 = parse_number("CALYX_DATASTORE_WAIT", &self.datastore_wait, "seconds")?;
        let refresh_text = self.route_refresh_interval.as_deref().unwrap_or("90");
        let refresh: u64 = parse_number("CALYX_ROUTE_REFRESH_INTERVAL", refresh_text, "seconds")?;
        let protocol_text = self.route_protocol.as_deref().unwrap_or("80");
        let route_protocol: u8 = parse_number(
            "CALYX_ROUTE_PROTOCOL",
            protocol_text,
            "a route protocol number 1-255",
        )?;
        let hold: u16 = parse_number(
            "CALYX_BGP_HOLD_TIME",
            &self.bgp_hold_time,
            "seconds: 0 or 3-65535",
        )?;
        if hold == 1 || hold == 2 {
            return Err(bad(
                "CALYX_BGP_HOLD_TIME",
                &self.bgp_hold_time,
                "expected seconds: 0 or 3-65535",
            ));
        }
        if route_protocol == 0 {
            return Err(bad(
                "CALYX_ROUTE_PROTOCOL",
                protocol_text,
                "expected a route protocol number 1-255",
            ));
        }
        Ok(NodeConfig {
            nodename,
            ipv4,
            ipv6,
            as_number,
            backend,
            router_id,
            default_ipv4_pool: (!no_default_pools).then_some(v4pool),
            default_ipv6_pool: if no_default_pools { None } else { v6pool },
            health_listen,
            health_listen_set: self.health_listen.is_some(),
            datastore_wait: Duration::from_secs(wait),
            graceful_restart: parse_bool("CALYX_GRACEFUL_RESTART", &self.graceful_restart)?,
            bgp_hold_time: hold,
            state_dir: self.state_dir.clone(),
            bgp_secrets_dir: self.bgp_secrets_dir.clone(),
            route_protocol,
            route_protocol_set: self.route_protocol.is_some(),
            route_refresh_interval: Duration::from_secs(refresh.max(1)),
            route_refresh_interval_set: self.route_refresh_interval.is_some(),
            cluster_type: self.cluster_type.trim().to_string(),
            ipam_gc_grace: parse_duration("CALYX_IPAM_GC_GRACE", &self.ipam_gc_grace)?,
        })
    }
}

fn check_selector(variable: &'static str, value: &str) -> Result<(), ConfigError> {
    calyx_datastore::selector::Selector::parse(value)
        .map(|_| ())
        .map_err(|e| bad(variable, value, e.to_string()))
}

/// The host name, lower-cased (Kubernetes node names are), as calico-node defaults it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: NodeRunArgs,
    }

    fn args(extra: &[&str]) -> NodeRunArgs {
        let mut argv = vec!["calyx", "--nodename", "node1"];
        argv.extend_from_slice(extra);
        Wrapper::parse_from(argv).args
    }

    #[test]
    fn gc_grace_parses() {
        assert_eq!(
            args(&[]).resolve().unwrap().ipam_gc_grace,
            Duration::from_secs(900)
        );
        let c = args(&["--ipam-gc-grace", "3"]).resolve().unwrap();
        assert_eq!(c.ipam_gc_grace, Duration::from_secs(3));
        assert_eq!(
            parse_duration("X", "2h").unwrap(),
            Duration::from_secs(7200)
        );
        for bad in ["", "m", "3d", "-1", "1.5m"] {
            let e = parse_duration("CALYX_IPAM_GC_GRACE", bad).unwrap_err();
            assert_eq!(e.variable, "CALYX_IPAM_GC_GRACE");
        }
    }

    #[test]
    fn defaults_resolve() {
        let c = args(&[]).resolve().unwrap();
        assert_eq!(c.nodename, "node1");
        assert_eq!(c.backend, Backend::Bgp);
        let pool = c.default_ipv4_pool.unwrap();
        assert_eq!(pool.cidr.to_string(), "192.168.0.0/16");
        assert_eq!(pool.block_size, 26);
        assert!(pool.nat_outgoing);
        assert_eq!(
            c.ipv4,
            AddressSetting::Autodetect(AutodetectMethod::FirstFound)
        );
        assert_eq!(c.ipv6, AddressSetting::None);
    }

    #[test]
    fn modes_accept_calico_spellings() {
        for (s, m) in [
            ("Always", EncapMode::Always),
            ("always", EncapMode::Always),
            ("CrossSubnet", EncapMode::CrossSubnet),
            ("cross-subnet", EncapMode::CrossSubnet),
            ("Never", EncapMode::Never),
            ("off", EncapMode::Never),
        ] {
            assert_eq!(parse_mode("X", s).unwrap(), m, "{s}");
        }
        let e = parse_mode("CALICO_IPV4POOL_VXLAN", "sometimes").unwrap_err();
        assert_eq!(
            e.to_string(),
            "CALICO_IPV4POOL_VXLAN=\"sometimes\": expected Always, CrossSubnet or Never"
        );
    }

    #[test]
    fn an_ipv6_only_node_runs_bgp_with_a_given_router_id_or_without_bgp() {
        let c = args(&["--ip", "none", "--ip6", "fd00::1/64", "--router-id", "hash"])
            .resolve()
            .unwrap();
        assert_eq!(c.router_id, RouterIdSetting::Hash);
        let vxlan = args(&[
            "--ip",
            "none",
            "--ip6",
            "fd00::1/64",
            "--networking-backend",
            "vxlan",
        ]);
        assert!(vxlan.resolve().is_ok());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases: &[(&[&str], &str)] = &[
            (&["--ipv4pool-cidr", "10.0.0.1/16"], "CALICO_IPV4POOL_CIDR"),
            (&["--ipv4pool-cidr", "banana"], "CALICO_IPV4POOL_CIDR"),
            (
                &["--ipv4pool-block-size", "33"],
                "CALICO_IPV4POOL_BLOCK_SIZE",
            ),
            (&["--ipv4pool-ipip", "maybe"], "CALICO_IPV4POOL_IPIP"),
            (&["--ip", "10.0.0.300"], "IP"),
            (&["--ip", "fd00::1"], "IP"),
            (
                &["--ip-autodetection-method", "guess"],
                "IP_AUTODETECTION_METHOD",
            ),
            (
                &["--ip-autodetection-method", "interface=("],
                "IP_AUTODETECTION_METHOD",
            ),
            (&["--as=-3"], "AS"),
            (
                &["--networking-backend", "ospf"],
                "CALICO_NETWORKING_BACKEND",
            ),
            (&["--router-id", "x"], "CALICO_ROUTER_ID"),
            (&["--no-default-pools", "perhaps"], "NO_DEFAULT_POOLS"),
            (
                &["--ipv4pool-ipip", "Always", "--ipv4pool-vxlan", "Always"],
                "CALICO_IPV4POOL_VXLAN",
            ),
            (
                &["--ipv4pool-node-selector", "a ==="],
                "CALICO_IPV4POOL_NODE_SELECTOR",
            ),
            (&["--health-listen", "nowhere"], "CALYX_HEALTH_LISTEN"),
            // IPv6-only in BGP mode needs a router ID.
            (&["--ip", "none", "--ip6", "fd00::1/64"], "CALICO_ROUTER_ID"),
        ];
        for (extra, var) in cases {
            let e = args(extra).resolve().unwrap_err();
            assert_eq!(e.variable, *var, "{extra:?}: {e}");
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn addresses_and_methods_parse() {
        assert_eq!(
            parse_address("IP", "10.0.0.5/24", AutodetectMethod::FirstFound, false).unwrap(),
            AddressSetting::Fixed("10.0.0.5".parse().unwrap(), Some(24))
        );
        assert_eq!(
            parse_address("IP", "10.0.0.5", AutodetectMethod::FirstFound, false).unwrap(),
            AddressSetting::Fixed("10.0.0.5".parse().unwrap(), None)
        );
        assert_eq!(
            parse_method("M", "cidr=10.0.0.0/8, 192.168.0.0/16").unwrap(),
            AutodetectMethod::Cidr(vec![
                "10.0.0.0/8".parse().unwrap(),
                "192.168.0.0/16".parse().unwrap()
            ])
        );
        assert_eq!(
            parse_method("M", "can-reach=8.8.8.8").unwrap(),
            AutodetectMethod::CanReach("8.8.8.8".into())
        );
        assert_eq!(
            parse_method("M", "skip-interface=docker.*,veth.*").unwrap(),
            AutodetectMethod::SkipInterface(vec!["docker.*".into(), "veth.*".into()])
        );
    }
}
