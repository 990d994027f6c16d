//! `wfd broker`: the built-in service broker (`wf_broker`), offering PostgreSQL
//! databases on one server to any platform that registers it with
//! `wf create-service-broker`.

use std::net::SocketAddr;

use anyhow::Context as _;

use super::process::{bind, serve, stop_signal, StopArgs};

#[derive(Clone, clap::Args)]
pub struct BrokerArgs {
    /// Where the OSB API listens.
    #[arg(long, default_value = "127.0.0.1:8890")]
    pub listen: SocketAddr,
    /// `postgres://user:password@host:port/database` of a superuser on the server the
    /// databases are made on; the broker keeps its records in that database, and the
    /// credentials name that host and port.
    #[arg(long, env = "WFD_BROKER_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: String,
    /// The basic auth user the platform sends (`wf create-service-broker NAME USER PASS URL`).
    #[arg(long, env = "WFD_BROKER_USERNAME")]
    pub username: String,
    /// The basic auth password the platform sends.
    #[arg(long, env = "WFD_BROKER_PASSWORD", hide_env_values = true)]
    pub password: String,
    #[command(flatten)]
    pub stop: StopArgs,
}

/// The broker's OSB API, until stopped.
pub async fn broker(args: BrokerArgs) -> anyhow::Result<()> {
    let cancel = stop_signal(&args.stop);
    let broker = wf_broker::Broker::open(wf_broker::BrokerConfig {
        postgres_url: args.postgres_url.clone(),
        username: args.username.clone(),
        password: args.password.clone(),
    })
    .await
    .context("opening the service broker")?;
    let listener = bind(args.listen, "the service broker").await?;
    println!("broker: http://{}", listener.local_addr()?);
    serve(listener, broker.router(), cancel).await
}
