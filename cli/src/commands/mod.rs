//! One module per subcommand; [`run`] dispatches.

mod bgp;
mod delete_node;
mod get;
mod ipam;
mod ipamconfig;
mod label;
mod migrate;
mod node;
mod policy;
mod raw;
mod version;
mod wep;
mod write;

use anyhow::{Context, Result};
use calyx_datastore::resources::{parse_documents, Kind, Resource};
use clap::CommandFactory;

use crate::args::{Cli, Command};

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let datastore = cli.datastore;
    match cli.command {
        Command::Get(args) => get::run(&datastore, args).await,
        Command::Create(args) => write::write(&datastore, &args, write::Action::Create).await,
        Command::Apply(args) => write::write(&datastore, &args, write::Action::Apply).await,
        Command::Replace(args) => write::write(&datastore, &args, write::Action::Replace).await,
        Command::Validate(args) => write::write(&datastore, &args, write::Action::Validate).await,
        Command::Delete(args) => write::delete(&datastore, args).await,
        Command::Patch(args) => label::patch(&datastore, args).await,
        Command::Label(args) => label::label(&datastore, args).await,
        Command::Node(crate::args::NodeCommand::Run(args)) => {
            calyx_node::run(&crate::connect::etcd_config(&datastore)?, *args).await
        }
        Command::Node(crate::args::NodeCommand::Status(args)) => node::status(args).await,
        Command::Node(crate::args::NodeCommand::Checksystem) => node::checksystem().await,
        Command::Node(crate::args::NodeCommand::RemoveRules) => node::remove_rules().await,
        Command::Version => version::run(&datastore).await,
        Command::Ipam(command) => ipam::run(&datastore, command).await,
        Command::Bgp(crate::args::BgpCommand::Routes(args)) => bgp::routes(args).await,
        Command::Bgp(crate::args::BgpCommand::Peers(args)) => bgp::peers(args).await,
        Command::Datastore(crate::args::DatastoreCommand::Migrate(command)) => {
            migrate::run(&datastore, command).await
        }
        Command::Policy(crate::args::PolicyCommand::Show { name, namespace }) => {
            policy::show(&datastore, &namespace, &name).await
        }
        Command::Completion(args) => {
            let mut command = Cli::command();
            clap_complete::generate(args.shell, &mut command, "calyx", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// Parses a kind as calicoctl accepts it, with the error naming the accepted kinds.
pub fn parse_kind(text: &str) -> Result<Kind> {
    if let Some(k) = calyx_datastore::policy::PolicyKind::parse(text) {
        anyhow::bail!(
            "{k}: this command does not take the policy kinds yet (use calyx apply, get, delete)"
        );
    }
    Kind::parse(text).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Reads and parses every document of a file: the resource kinds, and the policy kinds
/// (Calico's, and Kubernetes NetworkPolicies translated as calico-kube-controllers does).
pub fn read_all_documents(
    path: &std::path::Path,
) -> Result<(Vec<Resource>, Vec<calyx_datastore::policy::PolicyObject>)> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    let (policies, rest) = calyx_datastore::policy::parse_policy_documents(&text)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let resources = parse_documents(&rest).map_err(|e| anyhow::anyhow!("{e}"))?;
    if resources.is_empty() && policies.is_empty() {
        anyhow::bail!("{}: no resources found", path.display());
    }
    Ok((resources, policies))
}
