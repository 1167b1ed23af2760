//! `calyx ipam show|check|release|configure|split`: calicoctl's IPAM commands over `calyx-ipam`
//! (`split` is in [`super::migrate`]).

use std::collections::HashSet;
use std::net::IpAddr;

use anyhow::{Context, Result};
use calyx_datastore::store::etcd::EtcdStore;
use calyx_ipam::check::CheckOptions;
use calyx_ipam::Ipam;

use crate::args::{DatastoreArgs, IpamCommand};
use crate::connect;

async fn ipam(datastore: &DatastoreArgs) -> Result<Ipam<EtcdStore>> {
    let store = EtcdStore::connect(&connect::etcd_config(datastore)?).await?;
    Ok(Ipam::new(store))
}

fn parse_ip(text: &str) -> Result<IpAddr> {
    text.parse()
        .with_context(|| format!("--ip {text:?} is not an IP address"))
}

/// Reads `--live-handles`: one handle per line, `#` comments and blank lines skipped; `-` is
/// standard input.
fn read_handles(path: &std::path::Path) -> Result<HashSet<String>> {
    let text = if path == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read handles from stdin")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read handles from {}", path.display()))?
    };
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Runs one `calyx ipam` subcommand.
pub async fn run(datastore: &DatastoreArgs, command: IpamCommand) -> Result<()> {
    match command {
        IpamCommand::Show {
            show_blocks,
            show_borrowed,
            ip,
            output,
        } => {
            let ipam = ipam(datastore).await?;
            if let Some(ip) = ip {
                let info = ipam.ip_info(parse_ip(&ip)?).await?;
                if output == "json" {
                    println!("{}", serde_json::to_string_pretty(&info)?);
                } else if info.allocated {
                    println!(
                        "IP {} is in use{}",
                        info.ip,
                        info.handle
                            .as_deref()
                            .map(|h| format!(" by handle {h}"))
                            .unwrap_or_default()
                    );
                    for (k, v) in &info.attributes {
                        println!("  {k}: {v}");
                    }
                } else {
                    println!("IP {} is not assigned", info.ip);
                }
                return Ok(());
            }
            let report = ipam.show().await?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table(show_blocks));
                if show_borrowed {
                    print!("{}", report.borrowed_table());
                }
            }
            Ok(())
        }
        IpamCommand::Check {
            fix,
            output,
            live_handles,
        } => {
            let live_handles = live_handles.as_deref().map(read_handles).transpose()?;
            let ipam = ipam(datastore).await?;
            let report = ipam
                .check(&CheckOptions {
                    fix,
                    live_handles,
                    workload_leaks: true,
                })
                .await?;
            print!("{}", report.summary());
            // calicoctl's rule: an allocation no WorkloadEndpoint accounts for is leaked; the
            // node agents free their own after a grace period.
            for a in &report.leaked {
                println!(
                    "leaked: {} held by {} on node {} (no WorkloadEndpoint)",
                    a.ip,
                    a.handle.as_deref().unwrap_or("no handle"),
                    a.node.as_deref().unwrap_or("unknown")
                );
            }
            for a in &report.not_live {
                println!(
                    "leaked: {} held by {} (release with `calyx ipam release --handle`)",
                    a.ip,
                    a.handle.as_deref().unwrap_or("no handle")
                );
            }
            if let Some(path) = output {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("Report written to {}", path.display());
            }
            if !report.is_clean() && !fix {
                anyhow::bail!("IPAM has problems; `calyx ipam check --fix` repairs what is safe");
            }
            Ok(())
        }
        IpamCommand::Release { ip, handle, node } => {
            let ipam = ipam(datastore).await?;
            match (ip, handle, node) {
                (Some(ip), None, None) => match ipam.release_ip(parse_ip(&ip)?).await? {
                    Some(r) => println!("Released {}", r.ip),
                    None => anyhow::bail!("{ip} is not assigned"),
                },
                (None, Some(handle), None) => {
                    let released = ipam.release_handle(&handle).await?;
                    println!("Released {} address(es) of handle {handle}", released.len());
                }
                (None, None, Some(node)) => {
                    let r = ipam.release_node(&node).await?;
                    println!(
                        "Released {} address(es) of node {node}; deleted {} block(s), removed {} affinity(ies)",
                        r.released.len(),
                        r.deleted_blocks.len(),
                        r.removed_affinities
                    );
                }
                _ => anyhow::bail!("give exactly one of --ip, --handle or --node"),
            }
            Ok(())
        }
        IpamCommand::Split { number, cidr, name } => {
            super::migrate::split(datastore, number, cidr, name).await
        }
        IpamCommand::Configure {
            strictaffinity,
            max_blocks_per_host,
        } => {
            if strictaffinity.is_none() && max_blocks_per_host.is_none() {
                anyhow::bail!("give --strictaffinity=true|false and/or --max-blocks-per-host N");
            }
            let ipam = ipam(datastore).await?;
            let config = ipam
                .configure(strictaffinity, max_blocks_per_host, None)
                .await?;
            println!(
                "IPAM configuration: strictAffinity={} maxBlocksPerHost={} autoAllocateBlocks={}",
                config.strict_affinity, config.max_blocks_per_host, config.auto_allocate_blocks
            );
            Ok(())
        }
    }
}
