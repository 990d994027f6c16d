//! `wfd`: runs Wasmfoundry. Parses arguments and hands over to `wf_cli::wfd`.

use clap::{Parser, Subcommand};

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Dev(args) => wf_cli::wfd::dev(args).await,
    }
}
