//! `wfd`: runs Wasmfoundry. Parses arguments and hands over to `wf_cli::wfd`.

use clap::{Parser, Subcommand};

/// mimalloc rather than glibc's allocator: the router's request path allocates a few
/// dozen small objects a request and spends about an eighth less CPU with it
/// (`bench/router.sh`, docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "wfd", version, about = "Runs the Wasmfoundry platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform in one process on the embedded defaults
    /// (SQLite, local blobstore, in-process message bus).
    Dev(wf_cli::wfd::DevArgs),
    /// The BBS: DesiredLRPs, ActualLRPs, Tasks, convergence, auction, route-emitter.
    /// One of several copies acts: the holder of the `bbs` lock.
    Bbs(wf_cli::wfd::BbsArgs),
    /// A cell: the rep and its wasmtime executor.
    Cell(wf_cli::wfd::CellArgs),
    /// The Cloud Controller (V3 API) and the log cache.
    Controller(wf_cli::wfd::ControllerArgs),
    /// UAA, the OAuth2 server.
    Uaa(wf_cli::wfd::UaaArgs),
    /// The router (Gorouter).
    Router(wf_cli::wfd::RouterArgs),
    /// The built-in service broker: PostgreSQL databases on one server, over the Open
    /// Service Broker API.
    Broker(wf_cli::wfd::BrokerArgs),
    /// Generate the platform CA and the certificates of the internal APIs' mutual TLS
    /// (BBS, reps, controller).
    Certs(wf_cli::wfd::CertsArgs),
    /// The BOSH director: deploys manifests through a CPI, with its health monitor.
    Director(wf_cli::wfd::DirectorArgs),
    /// The BOSH agent of a VM (a CPI starts it).
    Agent(wf_cli::wfd::AgentArgs),
    /// A built-in BOSH CPI: answers one request on standard input.
    #[command(subcommand)]
    Cpi(wf_cli::wfd::CpiCommand),
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    wf_cli::wfd::raise_open_files_limit();
    let result = match Cli::parse().command {
        Command::Dev(args) => wf_cli::wfd::dev(args).await,
        Command::Bbs(args) => wf_cli::wfd::bbs(args).await,
        Command::Cell(args) => wf_cli::wfd::cell(args).await,
        Command::Controller(args) => wf_cli::wfd::controller(args).await,
        Command::Uaa(args) => wf_cli::wfd::uaa(args).await,
        Command::Router(args) => wf_cli::wfd::router(args).await,
        Command::Broker(args) => wf_cli::wfd::broker(args).await,
        Command::Certs(args) => wf_cli::wfd::certs(args),
        Command::Director(args) => wf_cli::wfd::director(args).await,
        Command::Agent(args) => wf_cli::wfd::agent(args).await,
        Command::Cpi(command) => wf_cli::wfd::cpi(command).await,
    };
    // Exit here rather than when the runtime drops: a blocking read of standard input
    // (`--stop-on-stdin-close`) would hold the runtime's shutdown forever when the
    // process ends for another reason (an evacuated cell, a lost lock).
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e:?}");
            1
        }
    };
    std::process::exit(code);
}
