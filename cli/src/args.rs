//! Command-line arguments. Every datastore flag can also come from the environment variable
//! calicoctl reads.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Calyx: Calico-compatible node networking. This is the calicoctl-like client.
#[derive(Debug, Parser)]
#[command(name = "calyx", version, about, propagate_version = true)]
pub struct Cli {
    /// How to reach etcd.
    #[command(flatten)]
    pub datastore: DatastoreArgs,

    /// Log level on standard error (error, warn, info, debug, trace); default `warn` for
    /// client commands, `info` for `node run`.
    #[arg(long, global = true, env = "CALYX_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// etcd connection settings, named as calicoctl names them.
#[derive(Debug, Args, Clone)]
pub struct DatastoreArgs {
    /// Comma-separated etcd client URLs.
    #[arg(
        long,
        global = true,
        env = "ETCD_ENDPOINTS",
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd_endpoints: String,
    /// etcd user name.
    #[arg(long, global = true, env = "ETCD_USERNAME")]
    pub etcd_username: Option<String>,
    /// etcd password.
    #[arg(long, global = true, env = "ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<String>,
    /// CA certificate (PEM) that signed etcd's certificate.
    #[arg(long, global = true, env = "ETCD_CA_CERT_FILE")]
    pub etcd_ca_cert_file: Option<PathBuf>,
    /// Client certificate (PEM) for etcd.
    #[arg(long, global = true, env = "ETCD_CERT_FILE")]
    pub etcd_cert_file: Option<PathBuf>,
    /// Client key (PEM) for etcd.
    #[arg(long, global = true, env = "ETCD_KEY_FILE")]
    pub etcd_key_file: Option<PathBuf>,
    /// Seconds to wait for etcd before giving up.
    #[arg(long, global = true, env = "CALYX_ETCD_TIMEOUT", default_value_t = 5)]
    pub etcd_timeout: u64,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show resources: ippools, bgppeers, bgpconfigurations, nodes, the policy kinds, ...
    Get(GetArgs),
    /// Create resources from a file; fails if any exists.
    Create(FileArgs),
    /// Create or update resources from a file.
    Apply(FileArgs),
    /// Replace existing resources from a file; fails if any is missing.
    Replace(FileArgs),
    /// Delete resources named in a file, or one resource by kind and name.
    Delete(DeleteArgs),
    /// Change a resource with a JSON merge patch.
    Patch(PatchArgs),
    /// Set or remove labels of a resource.
    Label(LabelArgs),
    /// Check a file as `apply` would, without writing anything.
    Validate(FileArgs),
    /// Print a shell completion script.
    Completion(CompletionArgs),
    /// Show the client's version and build commit, and the cluster's version and type (from
    /// ClusterInformation), as `calicoctl version` does.
    Version,
    /// The node daemon and its status.
    #[command(subcommand)]
    Node(NodeCommand),
    /// IP address management: usage, consistency, release, settings, pool splits.
    #[command(subcommand)]
    Ipam(IpamCommand),
    /// Datastore operations: locking it for a migration.
    #[command(subcommand)]
    Datastore(DatastoreCommand),
    /// This node's BGP table and peers, from its daemon (`birdc show route all` and `show
    /// protocols all` for a Calico user).
    #[command(subcommand)]
    Bgp(BgpCommand),
    /// Network policy: which tiers, policies and profiles apply to a workload.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// `calyx bgp ...`.
#[derive(Debug, Subcommand)]
pub enum BgpCommand {
    /// Paths in the node's BGP table, best first (`*>`), with their attributes and the peer
    /// they came from.
    Routes(BgpRoutesArgs),
    /// The node's BGP peers in detail: state, counters, negotiated capabilities.
    Peers(BgpPeersArgs),
}

/// `calyx bgp routes`.
#[derive(Debug, Args)]
pub struct BgpRoutesArgs {
    /// A prefix (that destination only) or an address (the most specific destination
    /// holding it); every destination when omitted.
    pub target: Option<String>,
    /// Only paths learned from this peer.
    #[arg(long)]
    pub peer: Option<String>,
    /// At most this many destinations (default 10000, at most 100000).
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub limit: usize,
    /// The daemon's health/status endpoint.
    #[arg(long, env = "CALYX_HEALTH_LISTEN", default_value = "127.0.0.1:9099")]
    pub health_listen: String,
    /// Output format.
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}

/// `calyx bgp peers`.
#[derive(Debug, Args)]
pub struct BgpPeersArgs {
    /// The daemon's health/status endpoint.
    #[arg(long, env = "CALYX_HEALTH_LISTEN", default_value = "127.0.0.1:9099")]
    pub health_listen: String,
    /// Output format.
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}

/// `calyx datastore ...`.
#[derive(Debug, Subcommand)]
pub enum DatastoreCommand {
    /// Migration steps, as `calicoctl datastore migrate`.
    #[command(subcommand)]
    Migrate(MigrateCommand),
}

/// `calyx datastore migrate ...`.
#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Lock the datastore (ClusterInformation `datastoreReady: false`): CNI ADD and DEL are
    /// refused and the agents' address collection pauses until it is unlocked; needed by
    /// `calyx ipam split`.
    Lock,
    /// Unlock the datastore (`datastoreReady: true`).
    Unlock,
}

/// `calyx policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// The tiers, policies (in evaluation order) and profiles that apply to one
    /// WorkloadEndpoint, per direction.
    Show {
        /// The WorkloadEndpoint's name (as `calyx get wep -o wide` shows it).
        name: String,
        /// Its namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
}

/// `calyx ipam ...`.
#[derive(Debug, Subcommand)]
pub enum IpamCommand {
    /// Pool usage (GROUPING, CIDR, IPS TOTAL, IPS IN USE, IPS FREE).
    Show {
        /// One row per block too.
        #[arg(long)]
        show_blocks: bool,
        /// List addresses used by a node other than their block's.
        #[arg(long)]
        show_borrowed: bool,
        /// Show what is known about one address.
        #[arg(long)]
        ip: Option<String>,
        /// Output format.
        #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
        output: String,
    },
    /// Look for leaked addresses and inconsistent blocks, handles and affinities.
    Check {
        /// Repair what is safe to repair.
        #[arg(long)]
        fix: bool,
        /// The handles of the workloads that exist, one per line (`#` starts a comment; `-`
        /// reads standard input), e.g. `k8s-pod-network.<container ID>` for every sandbox the
        /// runtime holds. Addresses held by any other handle are reported as leaked: an ADD
        /// that failed and kept its address, a pod removed without a CNI DEL. Tunnel
        /// addresses are never counted as leaked.
        #[arg(long, value_name = "FILE")]
        live_handles: Option<PathBuf>,
        /// Also write the report as JSON to this file.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Release an address, every address of a handle, or everything of a node that left.
    Release {
        /// One address.
        #[arg(long)]
        ip: Option<String>,
        /// Every address of a handle (e.g. `k8s-pod-network.<container ID>`).
        #[arg(long)]
        handle: Option<String>,
        /// Everything of a node (its addresses, blocks and affinities).
        #[arg(long)]
        node: Option<String>,
    },
    /// Split an IP pool into NUMBER (a power of two) smaller pools of equal size named
    /// `split-<pool>-<i>`, as `calicoctl ipam split`; the datastore must be locked.
    Split {
        /// How many pools to make (2, 4, 8, ... 64).
        number: u32,
        /// CIDR of the pool to split.
        #[arg(long)]
        cidr: Option<String>,
        /// Name of the pool to split (wins over `--cidr`, as in calicoctl).
        #[arg(long)]
        name: Option<String>,
    },
    /// Change IPAM settings.
    Configure {
        /// Never borrow addresses from other nodes' blocks.
        #[arg(long)]
        strictaffinity: Option<bool>,
        /// Most blocks one node may claim (0 = no limit).
        #[arg(long)]
        max_blocks_per_host: Option<u32>,
    },
}

/// `calyx node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Run the node daemon (what the DaemonSet runs, in place of calico-node).
    Run(Box<calyx_node::config::NodeRunArgs>),
    /// Show the daemon's BGP peers, as `calicoctl node status` does.
    Status(NodeStatusArgs),
    /// Check this host for what the daemon needs (kernel features, forwarding,
    /// capabilities), one line each, as `calicoctl node checksystem` does; exit 1 when a
    /// required one is missing.
    Checksystem,
    /// Delete Calyx's nftables rules from this host (uninstall): table `inet calyx` and
    /// Calyx's rules in iptables-nft's FORWARD chains, nothing else. Stop the daemon first:
    /// a running daemon writes them back.
    RemoveRules,
}

/// `calyx node status`.
#[derive(Debug, Args)]
pub struct NodeStatusArgs {
    /// The daemon's health/status endpoint.
    #[arg(long, env = "CALYX_HEALTH_LISTEN", default_value = "127.0.0.1:9099")]
    pub health_listen: String,
    /// Output format: the calicoctl tables, or the raw JSON status.
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}

/// Output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The default table.
    Ps,
    /// A table with more columns.
    Wide,
    /// YAML documents, as `apply` takes them.
    Yaml,
    /// JSON.
    Json,
}

/// `calyx get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Kind, as calicoctl accepts it: ippool(s), bgppeer(s), bgpconfiguration(s), node(s),
    /// workloadendpoint(s) (wep), clusterinformation(s), networkpolicy(ies) (np),
    /// globalnetworkpolicy(ies) (gnp), profile(s), networkset(s), globalnetworkset(s), tier(s).
    pub kind: String,
    /// One resource by name; all of the kind when omitted.
    pub name: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "ps")]
    pub output: OutputFormat,
    /// Namespace of a namespaced kind (workloadendpoints, networkpolicies, networksets);
    /// `default` when omitted.
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// List a namespaced kind across all namespaces.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
}

/// Commands that read resources from a file.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// YAML or JSON file with one or more documents; `-` reads standard input.
    #[arg(short, long)]
    pub filename: PathBuf,
}

/// `calyx delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// YAML or JSON file naming the resources to delete; `-` reads standard input.
    #[arg(short, long, conflicts_with_all = ["kind", "name"])]
    pub filename: Option<PathBuf>,
    /// Kind of the resource to delete.
    #[arg(required_unless_present = "filename")]
    pub kind: Option<String>,
    /// Name of the resource to delete.
    #[arg(required_unless_present = "filename")]
    pub name: Option<String>,
    /// Succeed when the resource does not exist.
    #[arg(long)]
    pub skip_not_exists: bool,
    /// Namespace of a namespaced kind (workloadendpoint, networkpolicy, networkset);
    /// `default` when omitted.
    #[arg(short, long)]
    pub namespace: Option<String>,
}

/// `calyx patch`.
#[derive(Debug, Args)]
pub struct PatchArgs {
    /// Kind of the resource.
    pub kind: String,
    /// Name of the resource.
    pub name: String,
    /// The JSON merge patch, e.g. '{"spec":{"vxlanMode":"Always"}}'.
    #[arg(short, long)]
    pub patch: String,
}

/// `calyx label`.
#[derive(Debug, Args)]
pub struct LabelArgs {
    /// Kind of the resource.
    pub kind: String,
    /// Name of the resource.
    pub name: String,
    /// `key=value` to set, `key-` to remove, or a bare `key` with `--remove`.
    #[arg(required = true)]
    pub labels: Vec<String>,
    /// Remove the named labels (calicoctl's spelling).
    #[arg(long)]
    pub remove: bool,
    /// Allow changing the value of a label that is set (as calicoctl requires).
    #[arg(long)]
    pub overwrite: bool,
    /// Namespace of a namespaced kind (workloadendpoint); `default` when omitted.
    #[arg(short, long)]
    pub namespace: Option<String>,
}

/// `calyx completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}
