//! Delegation to the IPAM plugin, as the CNI specification describes it: the same environment
//! and network configuration, the plugin found in `CNI_PATH`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::ipam_plugin::{codes, CniError};
use ipnet::IpNet;
use serde_json::Value;

use crate::conf::{Env, NetConf};

fn find_plugin(env: &Env, name: &str) -> Result<PathBuf, CniError> {
    if name.contains('/') {
        return Err(CniError::new(
            codes::INVALID_CONFIG,
            "bad ipam.type",
            name.to_string(),
        ));
    }
    env.path
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                codes::INVALID_CONFIG,
                "IPAM plugin not found in CNI_PATH",
                format!("{name} in {:?}", env.path),
            )
        })
}

/// Runs the IPAM plugin with `command`; its result on success, its error as ours otherwise.
pub fn call(env: &Env, conf: &NetConf, command: &str, stdin: &[u8]) -> Result<Value, CniError> {
    let plugin = find_plugin(env, conf.ipam_type())?;
    let mut child = Command::new(&plugin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            CniError::new(
                codes::IO_FAILURE,
                "cannot run the IPAM plugin",
                e.to_string(),
            )
        })?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).map_err(|e| {
            CniError::new(
                codes::IO_FAILURE,
                "cannot feed the IPAM plugin",
                e.to_string(),
            )
        })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::new(codes::IO_FAILURE, "IPAM plugin failed", e.to_string()))?;
    let value: Value = if out.stdout.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).map_err(|e| {
            CniError::new(
                codes::DECODE_FAILURE,
                "IPAM plugin output is not JSON",
                e.to_string(),
            )
        })?
    };
    if !out.status.success() {
        let code = value
            .get("code")
            .and_then(Value::as_u64)
            .unwrap_or(u64::from(codes::IPAM_FAILURE));
        let msg = value
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or("IPAM plugin failed");
        let details = value.get("details").and_then(Value::as_str).unwrap_or("");
        return Err(CniError::new(
            u32::try_from(code).unwrap_or(codes::IPAM_FAILURE),
            msg,
            details,
        ));
    }
    Ok(value)
}

/// The addresses of an IPAM (or previous) result, as host prefixes (/32, /128).
pub fn addresses(result: &Value) -> Result<Vec<IpNet>, CniError> {
    let ips = result.get("ips").and_then(Value::as_array).ok_or_else(|| {
        CniError::new(
            codes::DECODE_FAILURE,
            "IPAM result has no ips",
            result.to_string(),
        )
    })?;
    let mut out = Vec::new();
    for ip in ips {
        let text = ip.get("address").and_then(Value::as_str).unwrap_or("");
        let net: IpNet = text.parse().map_err(|_| {
            CniError::new(
                codes::DECODE_FAILURE,
                "IPAM returned a bad address",
                text.to_string(),
            )
        })?;
        out.push(IpNet::from(net.addr()));
    }
    if out.is_empty() {
        return Err(CniError::new(
            codes::NO_ADDRESS,
            "IPAM returned no address",
            "",
        ));
    }
    Ok(out)
}
