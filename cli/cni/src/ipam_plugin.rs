//! The CNI IPAM plugin's logic (CNI specification 1.0): parsing the environment and network
//! configuration, ADD/DEL/CHECK/VERSION, results and errors as the spec's JSON. The
//! `calyx-ipam` binary is a thin shell around [`parse_request`] and [`execute`].
//!
//! Settings come from the network configuration on stdin as with Calico's plugin (`nodename`,
//! `etcd_endpoints`, `etcd_ca_cert_file`/`etcd_cert_file`/`etcd_key_file`, `ipam.ipv4_pools`,
//! `ipam.ipv6_pools`, `ipam.assign_ipv4`, `ipam.assign_ipv6`, `ipam.routes`), else from the
//! environment (`NODENAME`, `ETCD_ENDPOINTS`, `ETCD_CA_CERT_FILE`, `ETCD_CERT_FILE`,
//! `ETCD_KEY_FILE`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use calyx_datastore::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use calyx_ipam::{AllocationAttrs, AssignArgs, Family, Ipam, IpamError};

/// The versions this plugin speaks.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// Where the node daemon writes the node's name (read when neither the network configuration
/// nor `NODENAME` gives one). `CALYX_NODENAME_FILE` overrides the path.
pub const NODENAME_FILE: &str = "/var/lib/calyx/nodename";

/// CNI error codes (spec section "Error").
pub mod codes {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// Plugin-specific: no address available.
    pub const NO_ADDRESS: u32 = 100;
    /// Plugin-specific: CHECK found the addresses differ from the previous result.
    pub const CHECK_MISMATCH: u32 = 101;
    /// Plugin-specific: any other IPAM failure.
    pub const IPAM_FAILURE: u32 = 102;
    /// Plugin-specific: the datastore is locked for a migration (`calyx datastore migrate
    /// lock`); the runtime's retry succeeds once it is unlocked.
    pub const DATASTORE_LOCKED: u32 = 103;
}

/// A CNI error: printed as `{"cniVersion", "code", "msg", "details"}` on stdout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    /// The spec's code.
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// Details.
    pub details: String,
}

impl CniError {
    /// A new error.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The JSON the runtime reads.
    pub fn to_json(&self, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

impl From<IpamError> for CniError {
    fn from(e: IpamError) -> Self {
        let code = match &e {
            IpamError::Exhausted { .. } => codes::NO_ADDRESS,
            IpamError::Store(StoreError::Unavailable { .. })
            | IpamError::TooManyConflicts { .. } => codes::TRY_AGAIN_LATER,
            IpamError::Store(StoreError::Config(_)) | IpamError::BadSelector { .. } => {
                codes::INVALID_CONFIG
            }
            _ => codes::IPAM_FAILURE,
        };
        CniError::new(code, "IPAM failed", e.to_string())
    }
}

/// How long one CNI command keeps retrying a datastore that does not answer or keeps losing
/// compare-and-swap races. Calico's IPAM plugin gives a command 90 s; kubelet's runtime waits
/// 2 minutes for the whole sandbox, so giving up after one 5 s request timeout (as Calyx once
/// did) fails pods that a moment later would have been fine. `CALYX_CNI_TIMEOUT` (seconds)
/// overrides it.
pub const DEFAULT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(90);

/// The time one command may take: `CALYX_CNI_TIMEOUT` (whole seconds above 0) when set
/// (`value`), else [`DEFAULT_DEADLINE`]; a bad value is the runtime's INVALID_ENV error.
pub fn deadline(value: Option<String>) -> Result<std::time::Duration, CniError> {
    match value {
        None => Ok(DEFAULT_DEADLINE),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|s| *s > 0)
            .map(std::time::Duration::from_secs)
            .ok_or_else(|| {
                CniError::new(
                    codes::INVALID_ENV,
                    "bad CALYX_CNI_TIMEOUT",
                    format!("{v:?}: expected a number of seconds above 0"),
                )
            }),
    }
}

/// Runs `attempt` until it succeeds, fails with an error that retrying cannot mend, or
/// `deadline` passes; the last error is returned then. Only [`codes::TRY_AGAIN_LATER`] errors
/// (datastore unavailable, too many conflicts) are retried. Safe for every CNI command: ADD
/// is idempotent per handle (a retried ADD whose first try did write gets the same
/// addresses back), DEL and CHECK change nothing twice.
pub async fn retry_until<T, F, Fut>(
    deadline: tokio::time::Instant,
    mut attempt: F,
) -> Result<T, CniError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CniError>>,
{
    let mut pause = std::time::Duration::from_millis(100);
    let mut tries = 0u32;
    loop {
        tries = tries.saturating_add(1);
        match attempt().await {
            Err(e) if e.code == codes::TRY_AGAIN_LATER => {
                let now = tokio::time::Instant::now();
                if now + pause >= deadline {
                    return Err(e);
                }
                tracing::warn!(tries, error = %e, "retrying within the CNI deadline");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// How long an ADD that failed for good keeps trying, after its own deadline, to give back
/// what it may hold. Inside kubelet's 2 minutes per sandbox with the default 90 s deadline.
pub const ROLLBACK_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

/// Releases whatever `handle` holds after an ADD failed for good, retrying a datastore that
/// does not answer until `deadline`; returns how many addresses it released.
///
/// A failed ADD must not keep an address: when etcd fails over, a write can be applied while
/// its answer is lost, and the ADD's own rollback (in [`execute`]) can fail the same way. The
/// handle belongs to this container alone, and the runtime follows a failed ADD with a DEL of
/// the same handle anyway, so releasing it is always safe.
pub async fn roll_back_add<S: Store>(
    ipam: &Ipam<S>,
    handle: &str,
    deadline: tokio::time::Instant,
) -> Result<usize, CniError> {
    retry_until(deadline, || async {
        ipam.release_handle(handle)
            .await
            .map(|released| released.len())
            .map_err(CniError::from)
    })
    .await
}

/// The `ipam` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct IpamSection {
    /// Always `calyx-ipam` (or whatever the binary is called).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Pools (names or CIDRs) to take IPv4 addresses from.
    #[serde(default)]
    pub ipv4_pools: Option<Vec<String>>,
    /// Pools (names or CIDRs) to take IPv6 addresses from.
    #[serde(default)]
    pub ipv6_pools: Option<Vec<String>>,
    /// Assign an IPv4 address (default true); Calico spells it as a string.
    #[serde(default)]
    pub assign_ipv4: Option<Value>,
    /// Assign an IPv6 address (default false).
    #[serde(default)]
    pub assign_ipv6: Option<Value>,
    /// Routes to return with the result.
    #[serde(default)]
    pub routes: Option<Vec<Value>>,
}

/// The parts of the network configuration this plugin reads (everything else is ignored, as
/// CNI configurations carry the main plugin's settings too).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct NetConf {
    /// The configuration's CNI version.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// The network name (the handle prefix).
    #[serde(default)]
    pub name: String,
    /// The node name.
    #[serde(default)]
    pub nodename: Option<String>,
    /// Comma-separated etcd endpoints.
    #[serde(default)]
    pub etcd_endpoints: Option<String>,
    /// etcd CA file.
    #[serde(default)]
    pub etcd_ca_cert_file: Option<String>,
    /// etcd client certificate.
    #[serde(default)]
    pub etcd_cert_file: Option<String>,
    /// etcd client key.
    #[serde(default)]
    pub etcd_key_file: Option<String>,
    /// The IPAM section.
    #[serde(default)]
    pub ipam: IpamSection,
    /// The previous result (CHECK, DEL).
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
}

/// The CNI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Assign.
    Add,
    /// Release.
    Del,
    /// Verify.
    Check,
    /// Report versions.
    Version,
}

/// A parsed invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The command.
    pub command: Command,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`, split.
    pub args: BTreeMap<String, String>,
    /// The network configuration.
    pub conf: NetConf,
    /// The node name, resolved.
    pub node: String,
    /// etcd endpoints, resolved.
    pub etcd_endpoints: String,
    /// etcd TLS files, resolved: (CA, cert, key).
    pub etcd_tls: (Option<String>, Option<String>, Option<String>),
}

impl Request {
    /// `<network name>.<container ID>`.
    pub fn handle(&self) -> String {
        format!("{}.{}", self.conf.name, self.container_id)
    }

    /// The version to answer in.
    pub fn cni_version(&self) -> &str {
        if self.conf.cni_version.is_empty() {
            "1.0.0"
        } else {
            &self.conf.cni_version
        }
    }
}

fn flag(v: &Option<Value>, default: bool) -> bool {
    match v {
        None | Some(Value::Null) => default,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.trim().eq_ignore_ascii_case("true"),
        Some(_) => default,
    }
}

/// Parses `CNI_ARGS` (`K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;IgnoreUnknown=1`).
pub fn parse_cni_args(s: &str) -> BTreeMap<String, String> {
    s.split(';')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Parses the environment (through `env`) and stdin. For VERSION the configuration may be
/// empty or just `{"cniVersion": ...}`.
pub fn parse_request(
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Request, CniError> {
    let command = match env("CNI_COMMAND").as_deref().map(str::trim) {
        Some("ADD") => Command::Add,
        Some("DEL") => Command::Del,
        Some("CHECK") => Command::Check,
        Some("VERSION") => Command::Version,
        Some(other) => {
            return Err(CniError::new(
                codes::INVALID_ENV,
                "unknown CNI_COMMAND",
                format!("CNI_COMMAND={other:?}: expected ADD, DEL, CHECK or VERSION"),
            ))
        }
        None => {
            return Err(CniError::new(
                codes::INVALID_ENV,
                "CNI_COMMAND is not set",
                "this is a CNI plugin: the container runtime runs it with CNI_COMMAND and the network configuration on stdin",
            ))
        }
    };
    let conf: NetConf = if command == Command::Version && stdin.iter().all(u8::is_ascii_whitespace)
    {
        NetConf::default()
    } else {
        serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                codes::DECODE_FAILURE,
                "cannot decode the network configuration on stdin",
                e.to_string(),
            )
        })?
    };
    if !conf.cni_version.is_empty() && !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            codes::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!(
                "cniVersion {:?}; supported: {}",
                conf.cni_version,
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    let mut req = Request {
        command,
        container_id: String::new(),
        ifname: String::new(),
        args: parse_cni_args(&env("CNI_ARGS").unwrap_or_default()),
        conf,
        node: String::new(),
        etcd_endpoints: String::new(),
        etcd_tls: (None, None, None),
    };
    if command == Command::Version {
        return Ok(req);
    }
    req.container_id = env("CNI_CONTAINERID")
        .unwrap_or_default()
        .trim()
        .to_string();
    if req.container_id.is_empty() || req.container_id.contains('/') {
        return Err(CniError::new(
            codes::INVALID_ENV,
            "CNI_CONTAINERID is missing or invalid",
            format!("CNI_CONTAINERID={:?}", req.container_id),
        ));
    }
    req.ifname = env("CNI_IFNAME").unwrap_or_default();
    if req.conf.name.is_empty() || req.conf.name.contains('/') {
        return Err(CniError::new(
            codes::INVALID_CONFIG,
            "the network configuration has no valid \"name\"",
            format!("name={:?}", req.conf.name),
        ));
    }
    let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    req.node = nonempty(req.conf.nodename.clone())
        .or_else(|| nonempty(env("NODENAME")))
        .or_else(|| {
            let path =
                nonempty(env("CALYX_NODENAME_FILE")).unwrap_or_else(|| NODENAME_FILE.to_string());
            nonempty(std::fs::read_to_string(path).ok()).map(|s| s.trim().to_string())
        })
        .or_else(|| {
            nonempty(std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
                .map(|s| s.trim().to_string())
        })
        .ok_or_else(|| {
            CniError::new(
                codes::INVALID_CONFIG,
                "cannot tell the node name",
                "set \"nodename\" in the network configuration or NODENAME",
            )
        })?;
    req.etcd_endpoints = nonempty(req.conf.etcd_endpoints.clone())
        .or_else(|| nonempty(env("ETCD_ENDPOINTS")))
        .ok_or_else(|| {
            CniError::new(
                codes::INVALID_CONFIG,
                NO_ETCD,
                "set \"etcd_endpoints\" in the network configuration or ETCD_ENDPOINTS",
            )
        })?;
    req.etcd_tls = (
        nonempty(req.conf.etcd_ca_cert_file.clone()).or_else(|| nonempty(env("ETCD_CA_CERT_FILE"))),
        nonempty(req.conf.etcd_cert_file.clone()).or_else(|| nonempty(env("ETCD_CERT_FILE"))),
        nonempty(req.conf.etcd_key_file.clone()).or_else(|| nonempty(env("ETCD_KEY_FILE"))),
    );
    Ok(req)
}

/// The message of the error [`parse_request`] returns when no etcd is configured.
pub const NO_ETCD: &str = "no etcd endpoints";

/// The VERSION answer.
pub fn version_result(req: &Request) -> Value {
    json!({
        "cniVersion": req.cni_version(),
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

/// Runs ADD, DEL or CHECK; returns what to print on stdout (nothing for DEL and CHECK).
pub async fn execute<S: Store>(ipam: &Ipam<S>, req: &Request) -> Result<Option<Value>, CniError> {
    if matches!(req.command, Command::Add | Command::Del) {
        refuse_while_locked(ipam.store()).await?;
    }
    match req.command {
        Command::Version => Ok(Some(version_result(req))),
        Command::Add => add(ipam, req).await.map(Some),
        Command::Del => {
            let released = ipam.release_handle(&req.handle()).await?;
            tracing::info!(handle = %req.handle(), released = released.len(), "CNI DEL");
            Ok(None)
        }
        Command::Check => check(ipam, req).await.map(|()| None),
    }
}

/// As Calico's CNI plugin: no ADD or DEL while a migration holds the datastore
/// (ClusterInformation `datastoreReady: false`), so no address moves while pools change.
pub async fn refuse_while_locked<S: Store>(store: &S) -> Result<(), CniError> {
    let locked = calyx_datastore::migration::datastore_locked(store)
        .await
        .map_err(|e| match e {
            calyx_datastore::client::ClientError::Store(s) => CniError::from(IpamError::from(s)),
            other => CniError::new(
                codes::IPAM_FAILURE,
                "cannot read ClusterInformation",
                other.to_string(),
            ),
        })?;
    if locked {
        tracing::info!("upgrade may be in progress, ready flag is not set");
        return Err(CniError::new(
            codes::DATASTORE_LOCKED,
            "Calyx is currently not ready to process requests",
            "the datastore is locked for a migration (ClusterInformation datastoreReady: false); \
             `calyx datastore migrate unlock` ends it",
        ));
    }
    Ok(())
}

async fn add<S: Store>(ipam: &Ipam<S>, req: &Request) -> Result<Value, CniError> {
    let handle = req.handle();
    let want_v4 = flag(&req.conf.ipam.assign_ipv4, true);
    let want_v6 = flag(&req.conf.ipam.assign_ipv6, false);
    if !want_v4 && !want_v6 {
        return Err(CniError::new(
            codes::INVALID_CONFIG,
            "nothing to assign",
            "assign_ipv4 and assign_ipv6 are both false",
        ));
    }
    let attrs = AllocationAttrs {
        pod: req.args.get("K8S_POD_NAME").cloned(),
        namespace: req.args.get("K8S_POD_NAMESPACE").cloned(),
        ..Default::default()
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    for (family, wanted, pools) in [
        (Family::V4, want_v4, &req.conf.ipam.ipv4_pools),
        (Family::V6, want_v6, &req.conf.ipam.ipv6_pools),
    ] {
        if !wanted {
            continue;
        }
        let args = AssignArgs {
            handle: handle.clone(),
            node: req.node.clone(),
            family,
            count: 1,
            attrs: attrs.clone(),
            pools: pools.clone().filter(|p| !p.is_empty()),
        };
        match ipam.assign(args).await {
            Ok(got) => ips.extend(got),
            Err(e) => {
                // Do not keep half a result: give back what this ADD took.
                if let Err(re) = ipam.release_handle(&handle).await {
                    tracing::warn!(handle = %handle, error = %re, "could not roll back after a failed ADD");
                }
                return Err(e.into());
            }
        }
    }
    tracing::info!(handle = %handle, node = %req.node, ?ips, "CNI ADD");
    Ok(add_result(req, &ips))
}

/// The ADD result: `ips` (host routes: /32 and /128, as Calico's plugin) and `routes`.
pub fn add_result(req: &Request, ips: &[IpAddr]) -> Value {
    let old = matches!(req.cni_version(), "0.3.0" | "0.3.1" | "0.4.0");
    let ips_json: Vec<Value> = ips
        .iter()
        .map(|ip| {
            let (addr, v) = match ip {
                IpAddr::V4(_) => (format!("{ip}/32"), "4"),
                IpAddr::V6(_) => (format!("{ip}/128"), "6"),
            };
            if old {
                json!({"version": v, "address": addr})
            } else {
                json!({"address": addr})
            }
        })
        .collect();
    let routes: Vec<Value> = match &req.conf.ipam.routes {
        Some(r) => r.clone(),
        None => {
            let mut r = Vec::new();
            if ips.iter().any(IpAddr::is_ipv4) {
                r.push(json!({"dst": "0.0.0.0/0"}));
            }
            if ips.iter().any(IpAddr::is_ipv6) {
                r.push(json!({"dst": "::/0"}));
            }
            r
        }
    };
    json!({
        "cniVersion": req.cni_version(),
        "ips": ips_json,
        "routes": routes,
    })
}

async fn check<S: Store>(ipam: &Ipam<S>, req: &Request) -> Result<(), CniError> {
    let held = ipam.handle_addresses(&req.handle()).await?;
    if held.is_empty() {
        return Err(CniError::new(
            codes::UNKNOWN_CONTAINER,
            "no addresses are assigned to this container",
            format!("handle {}", req.handle()),
        ));
    }
    if let Some(prev) = &req.conf.prev_result {
        let listed = prev
            .get("ips")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for entry in listed {
            let addr = entry.get("address").and_then(Value::as_str).unwrap_or("");
            let ip = addr
                .split('/')
                .next()
                .unwrap_or("")
                .parse::<IpAddr>()
                .map_err(|_| {
                    CniError::new(
                        codes::DECODE_FAILURE,
                        "bad address in prevResult",
                        addr.to_string(),
                    )
                })?;
            if !held.contains(&ip) {
                return Err(CniError::new(
                    codes::CHECK_MISMATCH,
                    "prevResult lists an address this container does not hold",
                    format!("{ip} (held: {held:?})"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    const CONF: &str = r#"{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"calyx","nodename":"node1","etcd_endpoints":"http://10.0.0.1:2379","ipam":{"type":"calyx-ipam","ipv4_pools":["default-ipv4-ippool"]}}"#;

    #[test]
    fn parses_the_calico_style_config() {
        let env = env_of(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
            ),
        ]);
        let req = parse_request(&env, CONF.as_bytes()).unwrap();
        assert_eq!(req.command, Command::Add);
        assert_eq!(req.handle(), "k8s-pod-network.abc123");
        assert_eq!(req.node, "node1");
        assert_eq!(req.etcd_endpoints, "http://10.0.0.1:2379");
        assert_eq!(req.args["K8S_POD_NAME"], "web");
        assert_eq!(
            req.conf.ipam.ipv4_pools.as_deref(),
            Some(&["default-ipv4-ippool".to_string()][..])
        );
        let r = add_result(&req, &["10.0.0.5".parse().unwrap()]);
        assert_eq!(r["ips"][0]["address"], "10.0.0.5/32");
        assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
    }

    #[test]
    fn errors_have_spec_codes() {
        let e = parse_request(&env_of(&[]), b"{}").unwrap_err();
        assert_eq!(e.code, codes::INVALID_ENV);
        let e = parse_request(
            &env_of(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "x")]),
            b"{not json",
        )
        .unwrap_err();
        assert_eq!(e.code, codes::DECODE_FAILURE);
        let e = parse_request(
            &env_of(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "x")]),
            br#"{"cniVersion":"9.9.9","name":"n"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, codes::INCOMPATIBLE_VERSION);
        let e = parse_request(&env_of(&[("CNI_COMMAND", "ADD")]), CONF.as_bytes()).unwrap_err();
        assert_eq!(e.code, codes::INVALID_ENV);
        let e = parse_request(
            &env_of(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "x"),
                ("NODENAME", "n"),
            ]),
            br#"{"cniVersion":"1.0.0","name":"n"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, codes::INVALID_CONFIG);
        assert!(e.details.contains("etcd_endpoints"));
        let v = parse_request(&env_of(&[("CNI_COMMAND", "VERSION")]), b"").unwrap();
        assert_eq!(version_result(&v)["supportedVersions"][3], "1.0.0");
        assert_eq!(e.to_json("1.0.0")["code"], codes::INVALID_CONFIG);
    }

    #[test]
    fn env_fallbacks() {
        let env = env_of(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "x"),
            ("NODENAME", "envnode"),
            ("ETCD_ENDPOINTS", "http://127.0.0.1:1"),
            ("ETCD_CA_CERT_FILE", "/ca.pem"),
        ]);
        let req = parse_request(&env, br#"{"cniVersion":"0.4.0","name":"net"}"#).unwrap();
        assert_eq!(req.node, "envnode");
        assert_eq!(req.etcd_endpoints, "http://127.0.0.1:1");
        assert_eq!(req.etcd_tls.0.as_deref(), Some("/ca.pem"));
        let r = add_result(&req, &["fd00::1".parse().unwrap()]);
        assert_eq!(r["ips"][0]["version"], "6");
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn retries_what_may_pass_later_until_it_passes() {
        let tries = std::cell::Cell::new(0);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let got = run(retry_until(deadline, || async {
            tries.set(tries.get() + 1);
            if tries.get() < 3 {
                Err(CniError::new(
                    codes::TRY_AGAIN_LATER,
                    "IPAM failed",
                    "etcd busy",
                ))
            } else {
                Ok(7)
            }
        }));
        assert_eq!(got, Ok(7));
        assert_eq!(tries.get(), 3);
    }

    #[test]
    fn does_not_retry_what_cannot_pass() {
        let tries = std::cell::Cell::new(0);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let got: Result<(), _> = run(retry_until(deadline, || async {
            tries.set(tries.get() + 1);
            Err(CniError::new(codes::NO_ADDRESS, "IPAM failed", "pool full"))
        }));
        assert_eq!(got.unwrap_err().code, codes::NO_ADDRESS);
        assert_eq!(tries.get(), 1);
    }

    #[test]
    fn gives_up_with_the_last_error_at_the_deadline() {
        let tries = std::cell::Cell::new(0);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
        let got: Result<(), _> = run(retry_until(deadline, || async {
            tries.set(tries.get() + 1);
            Err(CniError::new(
                codes::TRY_AGAIN_LATER,
                "IPAM failed",
                format!("try {}", tries.get()),
            ))
        }));
        let e = got.unwrap_err();
        assert!(tries.get() >= 2, "retried within the deadline");
        assert_eq!(e.details, format!("try {}", tries.get()));
        assert!(tokio::time::Instant::now() < deadline + std::time::Duration::from_secs(5));
    }
}
