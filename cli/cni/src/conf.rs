//! The CNI environment and network configuration.

use crate::ipam_plugin::{codes, CniError};
use serde::Deserialize;
use serde_json::Value;

/// The `CNI_*` environment variables.
#[derive(Debug, Clone)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (a path).
    pub netns: Option<String>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`, `K=V;K=V`.
    pub args: String,
    /// `CNI_PATH`, where plugins are found.
    pub path: String,
}

impl Env {
    /// Reads the environment; the variables each command needs must be set.
    pub fn from_process() -> Result<Env, CniError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let command = var("CNI_COMMAND")
            .ok_or_else(|| CniError::new(codes::INVALID_ENV, "CNI_COMMAND is not set", ""))?;
        let env = Env {
            container_id: var("CNI_CONTAINERID").unwrap_or_default(),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME").unwrap_or_else(|| "eth0".into()),
            args: var("CNI_ARGS").unwrap_or_default(),
            path: var("CNI_PATH").unwrap_or_default(),
            command,
        };
        if env.command != "VERSION" && env.container_id.is_empty() {
            return Err(CniError::new(
                codes::INVALID_ENV,
                "CNI_CONTAINERID is not set",
                "",
            ));
        }
        if env.ifname.len() > 15 || env.ifname.contains('/') {
            return Err(CniError::new(
                codes::INVALID_ENV,
                "CNI_IFNAME is not a valid interface name",
                env.ifname.clone(),
            ));
        }
        Ok(env)
    }

    /// `CNI_NETNS`, required for ADD and CHECK.
    pub fn netns(&self) -> Result<&str, CniError> {
        self.netns
            .as_deref()
            .ok_or_else(|| CniError::new(codes::INVALID_ENV, "CNI_NETNS is not set", ""))
    }
}

/// The part of the network configuration this plugin reads (the rest goes to IPAM as is).
#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    /// `cniVersion`.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// `name`.
    pub name: String,
    /// `ipam`: at least `{"type": "..."}`.
    pub ipam: Value,
    /// `mtu` for the pod interface (the node computes it; 1500 minus tunnel overhead).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// `prevResult` (CHECK, DEL).
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
}

impl NetConf {
    /// Parses standard input.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                codes::DECODE_FAILURE,
                "cannot decode the network configuration",
                e.to_string(),
            )
        })?;
        if conf.name.trim().is_empty() {
            return Err(CniError::new(codes::INVALID_CONFIG, "name is not set", ""));
        }
        if conf
            .ipam
            .get("type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(CniError::new(
                codes::INVALID_CONFIG,
                "ipam.type is not set",
                "set it to the IPAM plugin, e.g. \"calyx-ipam\"",
            ));
        }
        if conf.mtu.is_some_and(|m| !(68..=65535).contains(&m)) {
            return Err(CniError::new(
                codes::INVALID_CONFIG,
                "mtu is out of range 68-65535",
                format!("{:?}", conf.mtu),
            ));
        }
        Ok(conf)
    }

    /// The IPAM plugin's name.
    pub fn ipam_type(&self) -> &str {
        self.ipam.get("type").and_then(Value::as_str).unwrap_or("")
    }
}
