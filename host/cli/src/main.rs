//! `orders`: run the orders API on the project's Spin-compatible runner.

mod auth_options;
mod bundle_options;
mod cluster;
mod cluster_process;
mod compile;
mod components;
mod config;
mod fd_limit;
mod migrate;
mod private_files;
mod keys;
mod private_file;
mod process_table;
mod run;
mod seed;
mod settings;
mod store_tools;
mod supervisor;
mod transfer;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "orders", version, about = "The orders API as WebAssembly components: run, scale out, seed.",
    long_about = "The orders API as WebAssembly components, served by a Spin-compatible runner with a \
                  native sidecar for MongoDB/Redis (or embedded defaults).\n\nEvery flag can also be set \
                  with an ORDERS_* environment variable (shown in each flag's help) or a key of the TOML \
                  file given with --config / ORDERS_CONFIG (flag names with '_' for '-').")]
struct Cli {
    /// TOML file with default settings (keys like data_dir, mongo_uri, redis_url).
    #[arg(long, global = true, env = "ORDERS_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Log filter, e.g. info, warn, access=off (JSON logs go to stderr).
    #[arg(long, global = true, env = "ORDERS_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the components if needed, start runner + sidecar, print the URL.
    Up(run::UpArgs),
    /// Run only the sidecar (for use beside `spin up`, or shared by several instances).
    Sidecar(run::SidecarArgs),
    /// Run only the runner, with a sidecar elsewhere (one instance of a cluster).
    Serve(run::ServeArgs),
    /// Start nginx in front of N runner instances and their sidecars, restarting any that exits.
    Cluster(cluster::ClusterArgs),
    /// Fill the store with N realistic fake orders through the API.
    Seed(seed::SeedArgs),
    /// Report how the stored orders meet the contract; with --apply, write the lossless repairs.
    Migrate(migrate::MigrateArgs),
    /// Write the orders as JSON lines of MongoDB Extended JSON (as mongoexport does).
    Export(transfer::ExportArgs),
    /// Read orders from JSON lines of Extended JSON (a mongoexport file), idempotent by _id.
    Import(transfer::ImportArgs),
    /// Create, list and revoke API keys (in the product's store; works while it runs).
    Keys(keys::KeysArgs),
    /// Print the audit trail: every accepted write and key change.
    Audit(keys::AuditArgs),
    /// Compile the components to machine code into the data directory's cache (servers do
    /// it on their own at start; this bakes it in ahead, e.g. into an image).
    Compile(compile::CompileArgs),
}

impl Command {
    /// What clap's parsers cannot see alone: secrets' lengths, URIs'
    /// shapes, lists that parse as a whole. Messages name the key.
    fn check(&self) -> Result<()> {
        match self {
            Command::Up(args) => args.check(),
            Command::Sidecar(args) => args.check(),
            Command::Serve(args) => args.check(),
            Command::Cluster(args) => args.check(),
            Command::Migrate(args) => args.store.check(),
            Command::Export(args) => args.store.check(),
            Command::Import(args) => args.store.check(),
            Command::Seed(_) | Command::Keys(_) | Command::Audit(_) | Command::Compile(_) => Ok(()),
        }
    }
}

fn main() -> Result<()> {
    private_files::restrict_umask();
    let (argv, file) = settings::file::layer(Cli::command(), std::env::args().collect()).unwrap_or_else(|e| fail(e));
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|error| file.exit(error));
    cli.command.check().unwrap_or_else(|e| fail(e));
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).map_err(|e| anyhow::anyhow!("--log {:?}: {e}", cli.log))?)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => run::up(args).await,
            Command::Sidecar(args) => run::sidecar(args).await,
            Command::Serve(args) => run::serve(args).await,
            Command::Cluster(args) => cluster::run(args, &cli.log).await,
            Command::Seed(args) => seed::run(args).await,
            Command::Migrate(args) => migrate::run(args).await,
            Command::Export(args) => transfer::export(args).await,
            Command::Import(args) => transfer::import(args).await,
            Command::Keys(args) => keys::run(args).await,
            Command::Audit(args) => keys::audit(args).await,
            Command::Compile(args) => compile::run(args),
        }
    });
    result.unwrap_or_else(|e| fail(e));
    Ok(())
}

/// Settings that do not make sense, or a command that failed: one line on
/// stderr (no backtrace), status 1.
fn fail(error: anyhow::Error) -> ! {
    eprintln!("error: {error:#}");
    std::process::exit(1);
}
