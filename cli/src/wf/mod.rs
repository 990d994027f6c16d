//! `wf`: the developer CLI, a client of the Cloud Controller V3 API, UAA and the Log
//! Cache that behaves like the cf CLI (same commands, messages and exit codes).

pub mod client;
pub mod commands;
pub mod config;
pub mod output;
pub mod package;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use client::{Client, ClientError};
use config::{Config, ConfigError};
use package::PackageError;

#[derive(Debug, Parser)]
#[command(name = "wf", version, about = "The Wasmfoundry command line client")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// BOSH: deploy the platform over VMs through a director (`wf bosh --help`)
    Bosh(commands::bosh::BoshArgs),
    /// Set or view the target API endpoint
    Api {
        /// The API URL, e.g. http://127.0.0.1:9022
        url: Option<String>,
    },
    /// Log in, asking for what is not given
    Login {
        /// API endpoint (e.g. http://127.0.0.1:9022)
        #[arg(short = 'a')]
        api: Option<String>,
        /// Username
        #[arg(short = 'u')]
        username: Option<String>,
        /// Password
        #[arg(short = 'p')]
        password: Option<String>,
        /// Org
        #[arg(short = 'o')]
        org: Option<String>,
        /// Space
        #[arg(short = 's')]
        space: Option<String>,
    },
    /// Log in with a username and password, or a client id and secret (non-interactive)
    Auth {
        /// Username, or client id with --client-credentials
        username: String,
        /// Password, or client secret with --client-credentials
        password: String,
        /// Use (non-user) client credentials instead of user credentials
        #[arg(long)]
        client_credentials: bool,
    },
    /// Log out of the current session
    Logout,
    /// Print the current access token
    OauthToken,
    /// Create an org
    CreateOrg { name: String },
    /// List all orgs
    Orgs,
    /// Delete an org
    DeleteOrg {
        name: String,
        /// Force deletion without confirmation
        #[arg(short = 'f')]
        force: bool,
    },
    /// Create a space
    CreateSpace {
        name: String,
        /// Org (default: the targeted org)
        #[arg(short = 'o')]
        org: Option<String>,
    },
    /// List the spaces of the targeted org
    Spaces,
    /// Delete a space
    DeleteSpace {
        name: String,
        /// Org (default: the targeted org)
        #[arg(short = 'o')]
        org: Option<String>,
        /// Force deletion without confirmation
        #[arg(short = 'f')]
        force: bool,
    },
    /// Set or view the targeted org and space
    Target {
        #[arg(short = 'o')]
        org: Option<String>,
        #[arg(short = 's')]
        space: Option<String>,
    },
    /// Push a new app or sync changes to an existing app
    Push(PushArgs),
    /// List all apps in the targeted space
    Apps {
        /// Selector to filter apps by labels, e.g. 'env=dev,!chargeback-code,tier in (backend,worker)'
        #[arg(long)]
        labels: Option<String>,
    },
    /// Display the health and status of an app
    App {
        name: String,
        /// Print only the app's guid
        #[arg(long)]
        guid: bool,
    },
    /// Change the instance count or memory limit of an app
    Scale {
        name: String,
        /// Number of instances
        #[arg(short = 'i')]
        instances: Option<u32>,
        /// Memory limit (e.g. 256M, 1G)
        #[arg(short = 'm')]
        memory: Option<String>,
        /// Log rate limit per second, in bytes (e.g. 128B, 4K, 1M); -1 is unlimited
        #[arg(short = 'l', allow_hyphen_values = true)]
        log_rate_limit: Option<String>,
    },
    /// Start an app
    Start { name: String },
    /// Stop an app
    Stop { name: String },
    /// Stop all instances of an app, then start them again
    Restart { name: String },
    /// Stage the app's package again (new droplet, with the buildpack cache) and restart it
    Restage { name: String },
    /// Download an app's droplet (its current one unless --droplet is given)
    DownloadDroplet {
        name: String,
        /// The droplet's guid (default: the app's current droplet)
        #[arg(long)]
        droplet: Option<String>,
        /// Where to save it (default: droplet_<guid>.tgz in the current directory)
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// Copy the source code of an app to another existing app, stage it, and restart that app
    CopySource {
        source: String,
        destination: String,
        /// Do not restart the destination app (its new droplet is still current)
        #[arg(long)]
        no_restart: bool,
    },
    /// Delete an app
    Delete {
        name: String,
        /// Force deletion without confirmation
        #[arg(short = 'f')]
        force: bool,
        /// Also delete the routes mapped to the app
        #[arg(short = 'r')]
        delete_routes: bool,
    },
    /// Show recent events of an app (audit events, crashes)
    Events { name: String },
    /// Tail or show recent logs of an app
    Logs {
        name: String,
        /// Dump recent logs instead of tailing
        #[arg(long)]
        recent: bool,
    },
    /// Execute a raw request; the response body is printed as is
    Curl {
        /// API path, e.g. /v3/apps
        path: String,
        /// HTTP method (default GET, or POST when -d is given)
        #[arg(short = 'X')]
        method: Option<String>,
        /// Request body, or @FILE to read it from a file
        #[arg(short = 'd')]
        data: Option<String>,
        /// Extra header, 'Name: value' (repeatable)
        #[arg(short = 'H')]
        headers: Vec<String>,
    },
    /// Create a user-provided service instance
    #[command(name = "create-user-provided-service", visible_alias = "cups")]
    CreateUserProvidedService(commands::services::UserProvidedArgs),
    /// Update a user-provided service instance
    #[command(name = "update-user-provided-service", visible_alias = "uups")]
    UpdateUserProvidedService(commands::services::UserProvidedArgs),
    /// Create a service broker (admins; space developers with --space-scoped)
    CreateServiceBroker {
        name: String,
        username: String,
        password: String,
        url: String,
        /// Make the broker's plans available only in the targeted space
        #[arg(long = "space-scoped")]
        space_scoped: bool,
    },
    /// Update a service broker's URL and credentials (and fetch its catalog again)
    UpdateServiceBroker {
        name: String,
        username: String,
        password: String,
        url: String,
    },
    /// List service brokers
    ServiceBrokers,
    /// Delete a service broker
    DeleteServiceBroker {
        name: String,
        /// Force deletion without confirmation
        #[arg(short = 'f')]
        force: bool,
    },
    /// Make a service offering's plans available (to all, or to one org)
    EnableServiceAccess {
        offering: String,
        /// Only this plan
        #[arg(short = 'p')]
        plan: Option<String>,
        /// Only in this org
        #[arg(short = 'o')]
        org: Option<String>,
    },
    /// Make a service offering's plans admin-only again (or remove one org's access)
    DisableServiceAccess {
        offering: String,
        #[arg(short = 'p')]
        plan: Option<String>,
        #[arg(short = 'o')]
        org: Option<String>,
    },
    /// List service offerings and plans
    #[command(visible_alias = "m")]
    Marketplace {
        /// Show the plans of this offering
        #[arg(short = 'e')]
        offering: Option<String>,
    },
    /// Create a managed service instance
    #[command(visible_alias = "cs")]
    CreateService {
        offering: String,
        plan: String,
        name: String,
        /// Parameters for the broker: JSON, or a file holding it
        #[arg(short = 'c')]
        config: Option<String>,
        /// User provided tags, comma separated
        #[arg(short = 't')]
        tags: Option<String>,
        /// Wait for the operation to finish
        #[arg(long)]
        wait: bool,
    },
    /// Update a managed service instance: new parameters for the broker, or tags
    UpdateService {
        name: String,
        /// Parameters for the broker: JSON, or a file holding it
        #[arg(short = 'c')]
        config: Option<String>,
        /// User provided tags, comma separated
        #[arg(short = 't')]
        tags: Option<String>,
        /// Wait for the operation to finish
        #[arg(long)]
        wait: bool,
    },
    /// Create a service key
    #[command(visible_alias = "csk")]
    CreateServiceKey {
        service_instance: String,
        key: String,
        #[arg(short = 'c')]
        config: Option<String>,
    },
    /// Show a service key's credentials
    ServiceKey {
        service_instance: String,
        key: String,
    },
    /// Delete a service key
    #[command(visible_alias = "dsk")]
    DeleteServiceKey {
        service_instance: String,
        key: String,
        #[arg(short = 'f')]
        force: bool,
    },
    /// List service instances in the target space
    #[command(visible_alias = "s")]
    Services,
    /// Show service instance info
    Service { name: String },
    /// Bind a service instance to an app
    #[command(visible_alias = "bs")]
    BindService {
        app: String,
        service_instance: String,
        /// Name of the binding
        #[arg(long = "binding-name")]
        binding_name: Option<String>,
    },
    /// Unbind a service instance from an app
    #[command(visible_alias = "us")]
    UnbindService {
        app: String,
        service_instance: String,
    },
    /// Bind a service instance to a route: its route service sees the route's requests
    /// first
    #[command(visible_alias = "brs")]
    BindRouteService {
        #[command(flatten)]
        route: commands::routes::RouteArgs,
        service_instance: String,
        /// Parameters for the broker: JSON, or a file holding it
        #[arg(short = 'c')]
        config: Option<String>,
        /// Wait for the operation to finish
        #[arg(long)]
        wait: bool,
    },
    /// Unbind a service instance from a route
    #[command(visible_alias = "urs")]
    UnbindRouteService {
        #[command(flatten)]
        route: commands::routes::RouteArgs,
        service_instance: String,
        /// Force unbinding without confirmation
        #[arg(short = 'f')]
        force: bool,
        /// Wait for the operation to finish
        #[arg(long)]
        wait: bool,
    },
    /// Delete a service instance and its bindings
    #[command(visible_alias = "ds")]
    DeleteService {
        name: String,
        /// Force deletion without confirmation
        #[arg(short = 'f')]
        force: bool,
    },
    /// List the routes of the targeted space
    Routes,
    /// Create a route in the targeted space
    CreateRoute(commands::routes::RouteArgs),
    /// Delete a route
    DeleteRoute {
        #[command(flatten)]
        route: commands::routes::RouteArgs,
        /// Force deletion without confirmation
        #[arg(short = 'f')]
        force: bool,
    },
    /// Map a route to an app (creating the route if needed)
    MapRoute {
        app: String,
        #[command(flatten)]
        route: commands::routes::RouteArgs,
    },
    /// Remove a route from an app
    UnmapRoute {
        app: String,
        #[command(flatten)]
        route: commands::routes::RouteArgs,
    },
    /// List the domains of the targeted org
    Domains,
    /// Create a domain for one org's spaces
    CreatePrivateDomain { org: String, domain: String },
    /// Create a domain every org may use (admins)
    CreateSharedDomain { domain: String },
    /// Delete a private domain and its routes
    DeletePrivateDomain {
        domain: String,
        /// Force deletion without confirmation
        #[arg(short = 'f')]
        force: bool,
    },
    /// Delete a shared domain and its routes (admins)
    DeleteSharedDomain {
        domain: String,
        /// Force deletion without confirmation
        #[arg(short = 'f')]
        force: bool,
    },
    /// Show all environment variables of an app
    Env { name: String },
    /// Set an environment variable of an app
    SetEnv {
        name: String,
        key: String,
        value: String,
    },
    /// Remove an environment variable of an app
    UnsetEnv { name: String, key: String },
    /// Cancel an app's deployment (rolling or canary), going back to its previous droplet
    CancelDeployment { name: String },
    #[command(flatten)]
    User(commands::users::UserCommand),
    /// Run a one-off task on an app's current droplet
    RunTask {
        name: String,
        /// The command to run (default: the app's start command)
        #[arg(short = 'c', long)]
        command: Option<String>,
        /// Name of the task (default: a random name)
        #[arg(long = "name")]
        task_name: Option<String>,
        /// Memory limit (e.g. 256M, 1G)
        #[arg(short = 'm')]
        memory: Option<String>,
        /// Disk limit (e.g. 256M, 1G)
        #[arg(short = 'k')]
        disk: Option<String>,
    },
    /// List the tasks of an app
    Tasks { name: String },
    /// Terminate a running task of an app
    TerminateTask {
        name: String,
        /// The task's id, as `wf tasks` shows it
        id: u64,
    },
    // quotas, create-quota, set-space-quota, ...
    #[command(flatten)]
    Quotas(commands::quotas::QuotaCommand),
    // create-isolation-segment, isolation-segments, enable-org-isolation, ...
    #[command(flatten)]
    IsolationSegments(commands::isolation_segments::SegmentCommand),
    #[command(flatten)]
    Buildpack(commands::buildpacks::BuildpackCommand),
    // revisions, rollback, continue-deployment
    #[command(flatten)]
    Deployments(commands::deployments::DeploymentCommand),
    /// List all labels (key-value pairs) of a resource
    Labels {
        /// app, space, org, buildpack, domain, stack, service-instance or service-broker
        #[arg(value_enum)]
        resource: commands::labels::Resource,
        name: String,
    },
    /// Set labels (key-value pairs) on a resource
    SetLabel {
        /// app, space, org, buildpack, domain, stack, service-instance or service-broker
        #[arg(value_enum)]
        resource: commands::labels::Resource,
        name: String,
        /// KEY=VALUE pairs
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// Remove labels from a resource
    UnsetLabel {
        /// app, space, org, buildpack, domain, stack, service-instance or service-broker
        #[arg(value_enum)]
        resource: commands::labels::Resource,
        name: String,
        /// The keys to remove
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The app to push (default: every app of the manifest)
    pub name: Option<String>,
    /// Path to a manifest file, or a folder holding manifest.yml
    #[arg(short = 'f')]
    pub manifest: Option<PathBuf>,
    /// Ignore manifest.yml in the current directory
    #[arg(long)]
    pub no_manifest: bool,
    /// Path to a .wasm file, a .zip, or an app directory (default: the current directory)
    #[arg(short = 'p', conflicts_with = "droplet")]
    pub path: Option<PathBuf>,
    /// A droplet to run instead of staging the app's files (e.g. from `wf download-droplet`)
    #[arg(long, conflicts_with = "buildpacks")]
    pub droplet: Option<PathBuf>,
    /// Number of instances
    #[arg(short = 'i')]
    pub instances: Option<u32>,
    /// Memory limit (e.g. 256M, 1G)
    #[arg(short = 'm')]
    pub memory: Option<String>,
    /// Do not start the app after pushing
    #[arg(long)]
    pub no_start: bool,
    /// Buildpack to stage with (repeatable)
    #[arg(short = 'b')]
    pub buildpacks: Vec<String>,
    /// Application health check type: port, process, http or none
    #[arg(short = 'u', long = "health-check-type", value_parser = ["port", "process", "http", "none"])]
    pub health_check_type: Option<String>,
    /// Hostname of the app's route (default: the app's name)
    #[arg(short = 'n', long = "hostname", conflicts_with_all = ["random_route", "no_route"])]
    pub hostname: Option<String>,
    /// Give the app a route with a random hostname
    #[arg(long, conflicts_with = "no_route")]
    pub random_route: bool,
    /// Do not map a route to the app
    #[arg(long)]
    pub no_route: bool,
    /// Deployment strategy: `rolling` replaces the instances one at a time, without
    /// downtime; `canary` starts one new instance and pauses until `wf
    /// continue-deployment` (default: stop, then start)
    #[arg(long, value_parser = ["rolling", "canary"])]
    pub strategy: Option<String>,
    /// How many new instances a deployment starts at once (default 1)
    #[arg(long, requires = "strategy", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: Option<u32>,
}

/// Why a command failed; printed after `FAILED`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Package(#[from] PackageError),
    /// A failure explained in the cf CLI's words.
    #[error("{0}")]
    Failed(String),
}

impl From<client::ApiError> for Error {
    fn from(e: client::ApiError) -> Self {
        Error::Client(e.into())
    }
}

/// Parses the command line, runs the command, and maps failure to `FAILED` + exit 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("FAILED");
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command against the config in `$WF_HOME` (else `~/.wf`).
pub fn run(command: Command) -> Result<(), Error> {
    let path = Config::default_path()?;
    let config = Config::load(&path)?;
    let mut client = Client::new(config, path)?;
    let c = &mut client;
    use commands::{
        apps, buildpacks, curl, deployments, events, isolation_segments, labels, logs, orgs, push,
        quotas, routes, services, session, tasks, users,
    };
    match command {
        Command::Bosh(args) => commands::bosh::run(args),
        Command::Api { url } => session::api(c, url),
        Command::Login {
            api,
            username,
            password,
            org,
            space,
        } => session::login(
            c,
            session::LoginArgs {
                api,
                username,
                password,
                org,
                space,
            },
        ),
        Command::Auth {
            username,
            password,
            client_credentials,
        } => session::auth(c, &username, &password, client_credentials),
        Command::Logout => session::logout(c),
        Command::OauthToken => session::oauth_token(c),
        Command::Target { org, space } => session::target(c, org, space),
        Command::CreateOrg { name } => orgs::create_org(c, &name),
        Command::Orgs => orgs::orgs(c),
        Command::DeleteOrg { name, force } => orgs::delete_org(c, &name, force),
        Command::CreateSpace { name, org } => orgs::create_space(c, &name, org),
        Command::Spaces => orgs::spaces(c),
        Command::DeleteSpace { name, org, force } => orgs::delete_space(c, &name, org, force),
        Command::Push(args) => push::push(c, args),
        Command::Apps { labels } => apps::apps(c, labels.as_deref()),
        Command::App { name, guid } => apps::app(c, &name, guid),
        Command::Scale {
            name,
            instances,
            memory,
            log_rate_limit,
        } => apps::scale(c, &name, instances, memory, log_rate_limit),
        Command::Start { name } => apps::start(c, &name),
        Command::Stop { name } => apps::stop(c, &name),
        Command::Restart { name } => apps::restart(c, &name),
        Command::Restage { name } => push::restage(c, &name),
        Command::DownloadDroplet {
            name,
            droplet,
            path,
        } => push::download_droplet(c, &name, droplet.as_deref(), path),
        Command::CopySource {
            source,
            destination,
            no_restart,
        } => push::copy_source(c, &source, &destination, !no_restart),
        Command::Delete {
            name,
            force,
            delete_routes,
        } => apps::delete(c, &name, force, delete_routes),
        Command::Logs { name, recent } => logs::logs(c, &name, recent),
        Command::Events { name } => events::events(c, &name),
        Command::Curl {
            path,
            method,
            data,
            headers,
        } => curl::curl(c, &path, method, data, &headers),
        Command::CreateUserProvidedService(args) => services::create_user_provided(c, &args),
        Command::UpdateUserProvidedService(args) => services::update_user_provided(c, &args),
        Command::CreateServiceBroker {
            name,
            username,
            password,
            url,
            space_scoped,
        } => {
            commands::marketplace::create_broker(c, &name, &username, &password, &url, space_scoped)
        }
        Command::UpdateServiceBroker {
            name,
            username,
            password,
            url,
        } => commands::marketplace::update_broker(c, &name, &username, &password, &url),
        Command::ServiceBrokers => commands::marketplace::brokers(c),
        Command::DeleteServiceBroker { name, force } => {
            commands::marketplace::delete_broker(c, &name, force)
        }
        Command::EnableServiceAccess {
            offering,
            plan,
            org,
        } => commands::marketplace::enable_access(c, &offering, plan.as_deref(), org.as_deref()),
        Command::DisableServiceAccess {
            offering,
            plan,
            org,
        } => commands::marketplace::disable_access(c, &offering, plan.as_deref(), org.as_deref()),
        Command::Marketplace { offering } => {
            commands::marketplace::marketplace(c, offering.as_deref())
        }
        Command::CreateService {
            offering,
            plan,
            name,
            config,
            tags,
            wait,
        } => commands::marketplace::create_service(
            c,
            &offering,
            &plan,
            &name,
            config.as_deref(),
            tags.as_deref(),
            wait,
        ),
        Command::UpdateService {
            name,
            config,
            tags,
            wait,
        } => commands::marketplace::update_service(
            c,
            &name,
            config.as_deref(),
            tags.as_deref(),
            wait,
        ),
        Command::CreateServiceKey {
            service_instance,
            key,
            config,
        } => commands::marketplace::create_key(c, &service_instance, &key, config.as_deref()),
        Command::ServiceKey {
            service_instance,
            key,
        } => commands::marketplace::show_key(c, &service_instance, &key),
        Command::DeleteServiceKey {
            service_instance,
            key,
            force,
        } => commands::marketplace::delete_key(c, &service_instance, &key, force),
        Command::Services => services::services(c),
        Command::Service { name } => services::service(c, &name),
        Command::BindService {
            app,
            service_instance,
            binding_name,
        } => services::bind_service(c, &app, &service_instance, binding_name.as_deref()),
        Command::UnbindService {
            app,
            service_instance,
        } => services::unbind_service(c, &app, &service_instance),
        Command::BindRouteService {
            route,
            service_instance,
            config,
            wait,
        } => services::bind_route_service(c, &route, &service_instance, config.as_deref(), wait),
        Command::UnbindRouteService {
            route,
            service_instance,
            force,
            wait,
        } => services::unbind_route_service(c, &route, &service_instance, force, wait),
        Command::DeleteService { name, force } => services::delete_service(c, &name, force),
        Command::Routes => routes::routes(c),
        Command::CreateRoute(route) => routes::create_route(c, &route),
        Command::DeleteRoute { route, force } => routes::delete_route(c, &route, force),
        Command::MapRoute { app, route } => routes::map_route(c, &app, &route),
        Command::UnmapRoute { app, route } => routes::unmap_route(c, &app, &route),
        Command::Domains => routes::domains(c),
        Command::CreatePrivateDomain { org, domain } => {
            routes::create_domain(c, Some(&org), &domain)
        }
        Command::CreateSharedDomain { domain } => routes::create_domain(c, None, &domain),
        Command::DeletePrivateDomain { domain, force }
        | Command::DeleteSharedDomain { domain, force } => routes::delete_domain(c, &domain, force),
        Command::Env { name } => apps::env(c, &name),
        Command::SetEnv { name, key, value } => apps::set_env(c, &name, &key, &value),
        Command::UnsetEnv { name, key } => apps::unset_env(c, &name, &key),
        Command::CancelDeployment { name } => apps::cancel_deployment(c, &name),
        Command::RunTask {
            name,
            command,
            task_name,
            memory,
            disk,
        } => tasks::run_task(c, &name, command, task_name, memory, disk),
        Command::Tasks { name } => tasks::tasks(c, &name),
        Command::TerminateTask { name, id } => tasks::terminate_task(c, &name, id),
        Command::Quotas(command) => quotas::run(c, command),
        Command::Buildpack(command) => buildpacks::run(c, command),
        Command::Deployments(command) => deployments::run(c, command),
        Command::User(command) => users::run(c, command),
        Command::IsolationSegments(command) => isolation_segments::run(c, command),
        Command::Labels { resource, name } => labels::labels(c, resource, &name),
        Command::SetLabel {
            resource,
            name,
            labels: pairs,
        } => labels::set_label(c, resource, &name, &pairs),
        Command::UnsetLabel {
            resource,
            name,
            keys,
        } => labels::unset_label(c, resource, &name, &keys),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    /// Parses `args` as the `wf` binary does: on a thread with a main thread's stack
    /// (8 MiB). clap's derived parser for this many commands needs more than the 2 MiB
    /// of a test thread in unoptimized builds.
    fn parse<const N: usize>(args: [&'static str; N]) -> Result<Cli, clap::Error> {
        std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(move || Cli::try_parse_from(args))
            .expect("a parsing thread")
            .join()
            .expect("parsing does not panic")
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_label_commands() {
        use commands::labels::Resource;
        let cli = parse(["wf", "set-label", "app", "web", "env=prod", "tier=1"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::SetLabel { resource: Resource::App, ref name, ref labels }
                if name == "web" && labels.len() == 2
        ));
        let cli = parse(["wf", "apps", "--labels", "env in (a,b),!x"]).unwrap();
        assert!(
            matches!(cli.command, Command::Apps { ref labels } if labels.as_deref() == Some("env in (a,b),!x"))
        );
        let cli = parse(["wf", "labels", "buildpack", "b"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Labels {
                resource: Resource::Buildpack,
                ..
            }
        ));
        let cli = parse(["wf", "unset-label", "service-instance", "db", "k"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::UnsetLabel {
                resource: Resource::ServiceInstance,
                ..
            }
        ));
        assert!(parse(["wf", "unset-label", "org", "o"]).is_err());
        assert!(parse(["wf", "labels", "planet", "x"]).is_err());
    }

    #[test]
    fn parses_cf_style_flags() {
        let cli = parse([
            "wf",
            "push",
            "hello",
            "-p",
            "x.wasm",
            "-i",
            "3",
            "-m",
            "256M",
            "--no-start",
        ])
        .unwrap();
        match cli.command {
            Command::Push(args) => {
                assert_eq!(args.name.as_deref(), Some("hello"));
                assert_eq!(args.instances, Some(3));
                assert_eq!(args.memory.as_deref(), Some("256M"));
                assert!(args.no_start);
            }
            other => panic!("{other:?}"),
        }
        let cli = parse([
            "wf", "curl", "-X", "POST", "/v3/apps", "-d", "{}", "-H", "A: b",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Curl { ref headers, .. } if headers == &["A: b"]));
        assert!(parse(["wf", "scale", "x", "-i", "-1"]).is_err());
        assert!(parse(["wf", "oauth-token"]).is_ok());
        let cli = parse(["wf", "login", "-a", "x", "-u", "u", "-o", "o"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Login { ref api, ref password, .. } if api.as_deref() == Some("x") && password.is_none()
        ));
        let cli = parse(["wf", "auth", "c", "s", "--client-credentials"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Auth {
                client_credentials: true,
                ..
            }
        ));
        assert!(parse(["wf", "set-env", "a", "K", "V"]).is_ok());
        assert!(parse([
            "wf",
            "push",
            "a",
            "--strategy",
            "canary",
            "--max-in-flight",
            "2"
        ])
        .is_ok());
        assert!(parse(["wf", "push", "a", "--strategy", "blue-green"]).is_err());
        assert!(parse(["wf", "push", "a", "--max-in-flight", "2"]).is_err());
        assert!(parse(["wf", "rollback", "a", "--version", "1", "-f"]).is_ok());
        assert!(parse(["wf", "continue-deployment", "a", "--no-wait"]).is_ok());
        assert!(parse(["wf", "revisions", "a"]).is_ok());
        let cli = parse([
            "wf",
            "run-task",
            "hello",
            "--command",
            "app.wasm task",
            "--name",
            "t1",
            "-m",
            "64M",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::RunTask { ref command, ref task_name, .. }
                if command.as_deref() == Some("app.wasm task") && task_name.as_deref() == Some("t1")
        ));
        assert!(parse(["wf", "terminate-task", "hello", "1"]).is_ok());
        let cli = parse(["wf", "create-buildpack", "bp", "dir", "2", "--disable"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Buildpack(commands::buildpacks::BuildpackCommand::CreateBuildpack {
                position: 2,
                disable: true,
                ..
            })
        ));
        let cli = parse(["wf", "update-buildpack", "bp", "-i", "1", "--lock"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Buildpack(commands::buildpacks::BuildpackCommand::UpdateBuildpack { ref args, .. })
                if args.position == Some(1) && args.lock
        ));
        assert!(parse(["wf", "update-buildpack", "bp", "--enable", "--disable"]).is_err());
        assert!(parse(["wf", "delete-buildpack", "bp", "-f"]).is_ok());
        assert!(parse(["wf", "terminate-task", "hello", "x"]).is_err());
    }

    #[test]
    fn parses_route_service_commands() {
        let cli = parse([
            "wf",
            "bind-route-service",
            "apps.localhost",
            "--hostname",
            "web",
            "rs",
            "-c",
            "{}",
            "--wait",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::BindRouteService { ref route, ref service_instance, wait: true, .. }
                if route.domain == "apps.localhost"
                    && route.hostname.as_deref() == Some("web")
                    && service_instance == "rs"
        ));
        let cli = parse([
            "wf",
            "unbind-route-service",
            "apps.localhost",
            "--path",
            "/a",
            "rs",
            "-f",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::UnbindRouteService { ref route, force: true, wait: false, .. }
                if route.path.as_deref() == Some("/a")
        ));
    }
}
