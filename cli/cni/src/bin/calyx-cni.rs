//! `calyx-cni`: the CNI plugin (specification 1.0, type `calyx`) that a container runtime calls
//! for every pod.
//!
//! ADD asks the IPAM plugin named in `ipam.type` (found through `CNI_PATH`, normally
//! `calyx-ipam`) for the pod's addresses, then wires the pod as Calico does: a veth pair with
//! the host end `cali<hash>` and the pod end `eth0`, the pod's address as a /32 (/128) with a
//! default route via 169.254.1.1 (`onlink`), answered by proxy ARP on the host end, and a host
//! route `<pod IP>/32 dev cali…`, and records the pod as a Calico `WorkloadEndpoint` in etcd
//! (`calyx_cni::wep`). A failed ADD undoes what it did (veth deleted, IPAM released). DEL
//! undoes an ADD (the endpoint only if it is still this container's) and is idempotent. CHECK verifies the wiring. Errors are CNI
//! error JSON on standard output with a non-zero exit.
//!
//! Interfaces, addresses and routes are set with iproute2's `ip` (present on every node and in
//! the calyx image); the plugin holds no long-lived state of its own.

use std::io::Read;
use std::process::ExitCode;

use calyx_cni::ipam_plugin::{codes, parse_cni_args, CniError};
use calyx_cni::wep::{self, Datastore};
use calyx_datastore::wep_client::WepDeleted;
use serde_json::{json, Value};

use calyx_cni::conf::{Env, NetConf};
use calyx_cni::{delegate, wiring};

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let version_hint = std::io::stdin()
        .read_to_end(&mut stdin)
        .ok()
        .and_then(|_| serde_json::from_slice::<Value>(&stdin).ok())
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "1.0.0".into());
    match run(&stdin) {
        Ok(Some(result)) => {
            println!("{result}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{}", e.to_json(&version_hint));
            ExitCode::FAILURE
        }
    }
}

fn run(stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let env = Env::from_process()?;
    if env.command == "VERSION" {
        return Ok(Some(json!({
            "cniVersion": "1.0.0",
            "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"],
        })));
    }
    let conf = NetConf::parse(stdin)?;
    match env.command.as_str() {
        "ADD" => add(&env, &conf, stdin).map(Some),
        "DEL" => del(&env, &conf, stdin).map(|()| None),
        "CHECK" => check(&env, &conf, stdin).map(|()| None),
        other => Err(CniError::new(
            codes::INVALID_ENV,
            "unknown CNI_COMMAND",
            format!("{other:?} (expected ADD, DEL, CHECK or VERSION)"),
        )),
    }
}

fn add(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<Value, CniError> {
    let netns = env.netns()?;
    // Settle the endpoint's identity before taking an address, so a name Calico's rule
    // refuses fails the ADD with nothing to undo.
    let datastore = Datastore::from_request(&|k| std::env::var(k).ok(), stdin)?;
    let ids = match &datastore {
        Some(ds) => Some(wep::identifiers(
            &ds.node,
            &env.container_id,
            &env.ifname,
            &parse_cni_args(&env.args),
        )?),
        None => None,
    };
    let ipam_result = delegate::call(env, conf, "ADD", stdin)?;
    let ips = delegate::addresses(&ipam_result)?;
    let host_if = wiring::host_interface_name(env);
    // Leave nothing behind on failure: no veth, no address held.
    let undo = || {
        wiring::delete(&host_if);
        let _ = delegate::call(env, conf, "DEL", stdin);
    };
    let macs = match wiring::add(&host_if, netns, &env.ifname, &ips, conf.mtu) {
        Ok(macs) => macs,
        Err(e) => {
            undo();
            return Err(e);
        }
    };
    if let (Some(ds), Some(ids)) = (&datastore, &ids) {
        let endpoint = wep::endpoint(ids, &ips, &host_if, &macs.pod, &conf.name);
        if let Err(e) = ds.write(&endpoint) {
            undo();
            return Err(e);
        }
    }
    Ok(result(conf, env, &host_if, &macs, &ips))
}

fn del(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    // The endpoint first: when it records another container, this DEL is for an old sandbox
    // of a pod whose current sandbox owns the host interface (named after the pod), which
    // must stay. Its addresses are still released below: they are keyed by container.
    let mut current_sandbox_elsewhere = false;
    if let Some(ds) = Datastore::from_request(&|k| std::env::var(k).ok(), stdin)? {
        let ids = wep::identifiers(
            &ds.node,
            &env.container_id,
            &env.ifname,
            &parse_cni_args(&env.args),
        )?;
        current_sandbox_elsewhere = ds.delete(&ids)? == WepDeleted::OtherContainer;
    }
    if !current_sandbox_elsewhere {
        wiring::delete(&wiring::host_interface_name(env));
    }
    delegate::call(env, conf, "DEL", stdin).map(|_| ())
}

fn check(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let netns = env.netns()?;
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(codes::INVALID_CONFIG, "CHECK needs prevResult", ""))?;
    let ips = delegate::addresses(prev)?;
    delegate::call(env, conf, "CHECK", stdin)?;
    wiring::check(&wiring::host_interface_name(env), netns, &env.ifname, &ips)
}

/// The CNI 1.0 result: the two interfaces, the pod's addresses on the pod end.
fn result(
    conf: &NetConf,
    env: &Env,
    host_if: &str,
    macs: &wiring::Macs,
    ips: &[ipnet::IpNet],
) -> Value {
    json!({
        "cniVersion": conf.cni_version,
        "interfaces": [
            {"name": host_if, "mac": macs.host},
            {"name": env.ifname, "mac": macs.pod, "sandbox": env.netns.clone().unwrap_or_default()},
        ],
        "ips": ips.iter().map(|ip| json!({"address": ip.to_string(), "interface": 1})).collect::<Vec<_>>(),
        "routes": ips.iter().map(|ip| {
            if ip.addr().is_ipv4() { json!({"dst": "0.0.0.0/0"}) } else { json!({"dst": "::/0"}) }
        }).collect::<Vec<_>>(),
        "dns": {},
    })
}
