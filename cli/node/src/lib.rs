//! The node daemon as a library: what `calyx node run` (the DaemonSet's process, in place of
//! calico-node) runs, and the status types `calyx node status` reads.
//!
//! Start-up: check the configuration (nothing is written when it is bad), wait for the
//! datastore, find this node's addresses, create the default pools, write the `Node`, claim a
//! block and the tunnel addresses the pools need, then run: one watch on `/calico/` keeps a
//! snapshot of the cluster, from which the desired dataplane is recomputed (debounced) and
//! handed to the reconciler; the health endpoint serves the status.

mod autodetect;
mod bgp;
pub mod checksystem;
mod cluster;
pub mod config;
mod dataplane;
mod http;
mod startup;
pub mod status;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use calyx_datastore::client::ResourceClient;
use calyx_datastore::store::etcd::{EtcdConfig, EtcdStore};
use calyx_datastore::store::{Store, StoreError};
use calyx_felix::{Reconciler, ReconcilerHandle};
use calyx_ipam::{Family, Ipam};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::cluster::{ClusterState, WATCH_PREFIX};
use self::config::{Backend, NodeConfig, NodeRunArgs};
use self::dataplane::BgpRoutes;
use self::http::SharedStatus;
use self::status::{DataplaneStatus, IpamStatus, NodeStatus};

/// How long changes are gathered before the dataplane is recomputed.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Runs the node daemon until SIGTERM or SIGINT, with the datastore at `etcd`.
pub async fn run(etcd: &EtcdConfig, args: NodeRunArgs) -> Result<()> {
    let config = args.resolve()?;
    let store = wait_for_datastore(etcd, config.datastore_wait).await?;
    let client = ResourceClient::new(store.clone());
    let ipam = Ipam::new(store.clone());

    let ipv4 = autodetect::resolve(&config.ipv4, false).context("IPv4 address")?;
    let ipv6 = autodetect::resolve(&config.ipv6, true).context("IPv6 address")?;
    info!(
        node = %config.nodename, ipv4 = ?ipv4, ipv6 = ?ipv6, backend = ?config.backend,
        router_id = ?config.router_id, graceful_restart = config.graceful_restart,
        "starting"
    );

    // Bind the endpoint before writing anything, so that a port in use stops start-up early.
    let listener = http::bind(config.health_listen).await.with_context(|| {
        format!(
            "CALYX_HEALTH_LISTEN={}: cannot listen",
            config.health_listen
        )
    })?;

    startup::ensure_default_pools(&client, &config).await?;
    startup::ensure_cluster_information(&client, &config.cluster_type).await?;
    startup::write_node_addresses(&client, &config, ipv4, ipv6).await?;
    startup::wait_until_datastore_ready(&client).await;
    if ipv4.is_some() {
        ipam.ensure_block(&config.nodename, Family::V4)
            .await
            .context("cannot claim an IPv4 block")?;
    }
    if ipv6.is_some() && config.default_ipv6_pool.is_some() {
        ipam.ensure_block(&config.nodename, Family::V6)
            .await
            .context("cannot claim an IPv6 block")?;
    }
    write_nodename_file(&config);

    let stop = CancellationToken::new();
    let status: SharedStatus = Arc::new(RwLock::new(NodeStatus {
        node: config.nodename.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        backend: backend_name(config.backend).into(),
        started: unix_now(),
        ipv4: ipv4.map(|n| n.to_string()),
        ipv6: ipv6.map(|n| n.to_string()),
        ..NodeStatus::default()
    }));
    let server = tokio::spawn(http::serve(listener, status.clone(), stop.clone()));

    if config.backend != Backend::None {
        enable_forwarding(ipv6.is_some());
    }
    let reconciler = if config.backend == Backend::None {
        None
    } else {
        let rec = Reconciler::new(calyx_felix::Config {
            route_protocol: config.route_protocol,
            route_refresh_interval: config.route_refresh_interval,
            ..calyx_felix::Config::default()
        })
        .context("cannot open netlink")?;
        let handle = rec.handle();
        let task = tokio::spawn(rec.run(stop.child_token()));
        Some((handle, task))
    };

    let result = main_loop(
        &config,
        &store,
        &client,
        &ipam,
        reconciler.as_ref().map(|(h, _)| h),
        &status,
    )
    .await;

    info!("shutting down");
    stop.cancel();
    if let Some((_, task)) = reconciler {
        let _ = task.await;
    }
    let _ = server.await;
    result
}

/// Pods are routed through this host: forwarding on, as Felix sets it.
fn enable_forwarding(v6: bool) {
    let mut knobs = vec!["/proc/sys/net/ipv4/ip_forward"];
    if v6 {
        knobs.push("/proc/sys/net/ipv6/conf/all/forwarding");
    }
    for knob in knobs {
        if let Err(e) = std::fs::write(knob, "1") {
            warn!(%knob, error = %e, "cannot enable forwarding");
        }
    }
}

/// Connects to etcd, retrying until `wait` has passed; then one clear error.
async fn wait_for_datastore(config: &EtcdConfig, wait: Duration) -> Result<EtcdStore> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        match EtcdStore::connect(config).await {
            Ok(store) => return Ok(store),
            Err(e @ StoreError::Unavailable { .. }) if started.elapsed() < wait => {
                warn!(error = %e, "waiting for the datastore");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e).context("datastore"),
        }
    }
}

/// The CNI plugins find the node name here when their config does not give it.
fn write_nodename_file(config: &NodeConfig) {
    let path = config.state_dir.join("nodename");
    let written = std::fs::create_dir_all(&config.state_dir)
        .and_then(|_| std::fs::write(&path, format!("{}\n", config.nodename)));
    if let Err(e) = written {
        warn!(path = %path.display(), error = %e, "cannot write the node name file for CNI");
    }
}

/// The watch → snapshot → desired-state loop, until a signal.
async fn main_loop<S: Store + Clone>(
    config: &NodeConfig,
    store: &S,
    client: &ResourceClient<S>,
    ipam: &Ipam<S>,
    reconciler: Option<&ReconcilerHandle>,
    status: &SharedStatus,
) -> Result<()> {
    let listing = store.list(WATCH_PREFIX).await?;
    let mut state = ClusterState::from_kvs(&listing.kvs, listing.revision);
    let mut watch = store.watch(WATCH_PREFIX, listing.revision + 1).await?;
    let mut bgp_routes = BgpRoutes::new();
    let mut bgp = (config.backend == Backend::Bgp).then(|| {
        bgp::Bgp::new(
            CancellationToken::new(),
            restarted_recently(config),
            config.graceful_restart,
            config.bgp_hold_time,
        )
    });
    let mut dirty = true;
    let mut pools_changed = true;
    let mut tick = tokio::time::interval(DEBOUNCE);
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
    update_status(status, |s| s.datastore_synced = true);
    let result = loop {
        tokio::select! {
            _ = terminate.recv() => break Ok(()),
            _ = interrupt.recv() => break Ok(()),
            change = next_route(&mut bgp) => {
                if let Some(change) = change {
                    bgp::apply_route(&mut bgp_routes, change);
                    dirty = true;
                }
            }
            event = watch.next() => {
                let Some(event) = event else {
                    break Err(anyhow::anyhow!("the datastore watch ended"));
                };
                // Only a pool change can ask for new tunnel addresses; IPAM block writes are
                // the bulk of the events and need no copy of the pools to tell them apart.
                pools_changed |= touches_pools(&event);
                state.apply(&event);
                dirty = true;
            }
            _ = tick.tick() => {
                if pools_changed {
                    // Retried on the next change or tick when it fails (etcd away, say).
                    match startup::ensure_tunnels(client, ipam, &config.nodename, &state).await {
                        Ok(()) => pools_changed = false,
                        Err(e) => warn!(error = %format!("{e:#}"), "tunnel addresses"),
                    }
                }
                if dirty {
                    if let Some(bgp) = bgp.as_mut() {
                        if let Some(plan) = bgp::plan(&state, &config.nodename, config.router_id) {
                            bgp.apply(plan).await;
                        }
                    }
                    if let Some(rec) = reconciler {
                        rec.set_desired(dataplane::desired_state(
                            &state, &config.nodename, config.backend, &bgp_routes,
                        ));
                    }
                    dirty = false;
                }
                refresh_status(status, &state, &config.nodename, reconciler, bgp_routes.len());
                if let Some(bgp) = &bgp {
                    let peers = bgp.peer_status();
                    update_status(status, |s| {
                        s.peers = peers;
                        s.ready = s.datastore_synced && bgp_ready(s);
                    });
                }
            }
        }
    };
    if let Some(bgp) = bgp {
        if config.graceful_restart {
            mark_graceful_stop(config);
        }
        bgp.shutdown().await;
    }
    result
}

fn touches_pools(event: &calyx_datastore::store::WatchEvent) -> bool {
    use calyx_datastore::resources::Kind;
    use calyx_datastore::store::WatchEvent;
    let prefix = Kind::IPPool.key_prefix();
    match event {
        WatchEvent::Put(kv) => kv.key.starts_with(prefix),
        WatchEvent::Delete { key, .. } => key.starts_with(prefix),
        WatchEvent::Resync(_) => true,
    }
}

/// The next BGP best-route change; never resolves without BGP.
async fn next_route(bgp: &mut Option<bgp::Bgp>) -> Option<calyx_bgp::BestRouteChange> {
    match bgp {
        Some(b) => b.next_route().await,
        None => std::future::pending().await,
    }
}

/// How long after a graceful stop a start counts as a graceful restart (the restart time
/// this speaker advertises).
const GRACEFUL_RESTART_WINDOW: Duration = Duration::from_secs(120);

fn restart_marker(config: &NodeConfig) -> std::path::PathBuf {
    config.state_dir.join("graceful-stop")
}

/// Records when we stopped gracefully, so that the next start sets the GR restart bit.
fn mark_graceful_stop(config: &NodeConfig) {
    if let Err(e) = std::fs::write(restart_marker(config), unix_now().to_string()) {
        warn!(error = %e, "cannot record the graceful stop");
    }
}

/// True when the previous run stopped gracefully within the restart window.
fn restarted_recently(config: &NodeConfig) -> bool {
    let path = restart_marker(config);
    let stopped: Option<u64> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let _ = std::fs::remove_file(&path);
    stopped.is_some_and(|t| unix_now().saturating_sub(t) < GRACEFUL_RESTART_WINDOW.as_secs())
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).context("cannot install a signal handler")
}

fn update_status(status: &SharedStatus, change: impl FnOnce(&mut NodeStatus)) {
    let mut guard = status
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    change(&mut guard);
}

fn refresh_status(
    status: &SharedStatus,
    state: &ClusterState,
    me: &str,
    reconciler: Option<&ReconcilerHandle>,
    rib_routes: usize,
) {
    let mine: Vec<_> = state
        .blocks
        .values()
        .filter(|b| b.affine_host() == Some(me))
        .collect();
    let ipam = IpamStatus {
        blocks: mine.len() as u64,
        addresses_in_use: mine.iter().map(|b| b.num_allocated() as u64).sum(),
        addresses_total: mine.iter().map(|b| b.num_addresses() as u64).sum(),
    };
    let dataplane = reconciler.map(|r| {
        let s = r.status();
        DataplaneStatus {
            routes_desired: s.routes_desired as u64,
            routes_programmed: s.routes_programmed as u64,
            routes_pending: s.routes_pending as u64,
            routes_failed: s.routes_failed as u64,
            resyncs: s.resyncs,
            last_resync_seconds: s.last_resync_duration.map_or(0.0, |d| d.as_secs_f64()),
            drift_repairs: s.drift_repairs,
            resync_histogram: Default::default(),
        }
    });
    update_status(status, |s| {
        s.datastore_revision = state.revision;
        s.ipam = ipam;
        s.bgp_rib_routes = rib_routes as u64;
        if let Some(mut d) = dataplane {
            // The histogram lives here, not in the reconciler: a resync finished since the
            // last refresh (every 100 ms) is observed once.
            d.resync_histogram = std::mem::take(&mut s.dataplane.resync_histogram);
            if d.resyncs > s.dataplane.resyncs {
                d.resync_histogram.observe(d.last_resync_seconds);
            }
            s.dataplane = d;
        }
        // Ready by calico-node's rule; without BGP peers that is the datastore alone.
        s.ready = s.datastore_synced && bgp_ready(s);
    });
}

/// calico-node's BGP readiness: every peer Established during the first 30 s, at least one
/// after that; zero peers is ready.
fn bgp_ready(s: &NodeStatus) -> bool {
    if s.peers.is_empty() {
        return true;
    }
    let up = s.peers.iter().filter(|p| p.info == "Established").count();
    if unix_now().saturating_sub(s.started) < 30 {
        up == s.peers.len()
    } else {
        up > 0
    }
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Bgp => "bird",
        Backend::Vxlan => "vxlan",
        Backend::None => "none",
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
