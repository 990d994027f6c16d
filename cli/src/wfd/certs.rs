//! The internal APIs' mutual TLS on the command line: `wfd certs`, which makes the
//! platform CA and the components' certificates, and the `--mtls-ca`, `--mtls-cert` and
//! `--mtls-key` flags `wfd bbs`, `wfd cell` and `wfd controller` load them with (NATS
//! takes them through `--nats-tls-*`).

use std::path::PathBuf;

use anyhow::Context as _;
use wf_bbs::mtls::{self, MutualTls};

#[derive(Debug, Clone, clap::Args)]
pub struct CertsArgs {
    /// Where to write `ca.pem`, `ca-key.pem` and, per component (bbs, rep, controller,
    /// router, nats), `<component>.pem` and `<component>-key.pem` (keys readable by the
    /// owner only).
    /// A CA already there is kept: run it again to re-issue the certificates.
    #[arg(long)]
    pub dir: PathBuf,
    /// A host name or IP address the components are reached at, put in every
    /// certificate (repeatable, or comma-separated): every BBS's and every cell's.
    #[arg(long = "host", value_delimiter = ',', default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    pub hosts: Vec<String>,
}

/// `wfd certs`: the platform CA and a certificate for each internal component.
pub fn certs(args: CertsArgs) -> anyhow::Result<()> {
    let written = mtls::generate(&args.dir, &args.hosts, &mtls::COMPONENTS)
        .with_context(|| format!("writing certificates to {}", args.dir.display()))?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

/// Mutual TLS for the internal APIs (the BBS API, the reps'): all three flags, or none
/// for plain HTTP (`wfd dev` and one-machine trials on loopback).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MtlsArgs {
    /// The platform CA (`ca.pem` of `wfd certs`): peers must present a certificate it
    /// signed.
    #[arg(long, env = "WFD_MTLS_CA", value_name = "PEM", requires_all = ["mtls_cert", "mtls_key"])]
    pub mtls_ca: Option<PathBuf>,
    /// This component's certificate (`bbs.pem`, `rep.pem` or `controller.pem`).
    #[arg(long, env = "WFD_MTLS_CERT", value_name = "PEM", requires = "mtls_ca")]
    pub mtls_cert: Option<PathBuf>,
    /// This component's private key (`<component>-key.pem`).
    #[arg(long, env = "WFD_MTLS_KEY", value_name = "PEM", requires = "mtls_ca")]
    pub mtls_key: Option<PathBuf>,
}

impl MtlsArgs {
    /// The loaded certificates; `None` without the flags.
    pub fn load(&self) -> anyhow::Result<Option<MutualTls>> {
        let (Some(ca), Some(cert), Some(key)) = (&self.mtls_ca, &self.mtls_cert, &self.mtls_key)
        else {
            return Ok(None);
        };
        MutualTls::from_pem_files(ca, cert, key)
            .map(Some)
            .context("loading the --mtls-* certificates")
    }
}
