//! `calyx-ipam`: the CNI IPAM plugin (CNI specification 1.0).
//!
//! The container runtime runs it with `CNI_COMMAND` (ADD, DEL, CHECK, VERSION) and the other
//! `CNI_*` variables in the environment and the network configuration on stdin; the result (or
//! a CNI error) is JSON on stdout. Logs go to stderr (`CALYX_IPAM_LOG`, default `warn`).

use std::cell::RefCell;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use calyx_cni::ipam_plugin::{self as cni, codes, CniError, Command, Request};
use calyx_datastore::store::etcd::{EtcdConfig, EtcdStore};
use calyx_ipam::Ipam;

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CALYX_IPAM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let mut stdin = Vec::new();
    let env = |k: &str| std::env::var(k).ok();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Err(e) => Err((
            "1.0.0".to_string(),
            CniError::new(codes::IO_FAILURE, "cannot read stdin", e.to_string()),
        )),
        Ok(_) => match cni::parse_request(&env, &stdin) {
            Err(e) => Err((version_hint(&stdin), e)),
            Ok(req) => run(&req).map_err(|e| (req.cni_version().to_string(), e)),
        },
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err((version, e)) => {
            tracing::error!("{e}");
            let _ = writeln!(out, "{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}

/// The `cniVersion` of a configuration that did not parse as a whole, for the error reply.
fn version_hint(stdin: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| cni::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| "1.0.0".to_string())
}

fn run(req: &Request) -> Result<Option<serde_json::Value>, CniError> {
    if req.command == Command::Version {
        return Ok(Some(cni::version_result(req)));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(codes::IO_FAILURE, "cannot start the runtime", e.to_string()))?;
    let config = etcd_config(req)
        .map_err(|e| CniError::new(codes::INVALID_CONFIG, "bad etcd settings", format!("{e:#}")))?;
    let budget = deadline()?;
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + budget;
        // One connection for all attempts once it is made; a datastore that does not answer
        // (etcd busy, a member down) is retried until the deadline, not failed at once.
        let connected: RefCell<Option<Ipam<EtcdStore>>> = RefCell::new(None);
        let outcome = cni::retry_until(deadline, || async {
            let cached = connected.borrow().clone();
            let ipam = match cached {
                Some(ipam) => ipam,
                None => {
                    let store = EtcdStore::connect(&config)
                        .await
                        .map_err(|e| CniError::from(calyx_ipam::IpamError::from(e)))?;
                    let ipam = Ipam::new(store);
                    *connected.borrow_mut() = Some(ipam.clone());
                    ipam
                }
            };
            cni::execute(&ipam, req).await
        })
        .await;
        let ipam = connected.borrow().clone();
        match (outcome, ipam) {
            // Only an ADD that reached the datastore can hold something; one refused for a
            // lock wrote nothing and may not write now.
            (Err(e), Some(ipam))
                if req.command == Command::Add && e.code != codes::DATASTORE_LOCKED =>
            {
                let handle = req.handle();
                let grace = tokio::time::Instant::now().max(deadline) + cni::ROLLBACK_GRACE;
                match cni::roll_back_add(&ipam, &handle, grace).await {
                    Ok(released) => {
                        if released > 0 {
                            tracing::warn!(%handle, released, "released what the failed ADD held");
                        }
                        Err(e)
                    }
                    Err(re) => Err(CniError {
                        details: format!(
                            "{}; the addresses of handle {handle} could not be released ({re}): \
                             a CNI DEL of this container releases them",
                            e.details
                        ),
                        ..e
                    }),
                }
            }
            (outcome, _) => outcome,
        }
    })
}

/// The time one command may take, from `CALYX_CNI_TIMEOUT` (seconds) or
/// [`cni::DEFAULT_DEADLINE`].
fn deadline() -> Result<std::time::Duration, CniError> {
    cni::deadline(std::env::var("CALYX_CNI_TIMEOUT").ok())
}

fn etcd_config(req: &Request) -> anyhow::Result<EtcdConfig> {
    let mut config = EtcdConfig::from_endpoints(&req.etcd_endpoints)
        .with_context(|| format!("etcd endpoints {:?}", req.etcd_endpoints))?;
    let (ca, cert, key) = &req.etcd_tls;
    config.ca_cert_file = ca.as_ref().map(PathBuf::from);
    config.cert_file = cert.as_ref().map(PathBuf::from);
    config.key_file = key.as_ref().map(PathBuf::from);
    Ok(config)
}
