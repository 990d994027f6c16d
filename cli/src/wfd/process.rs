//! What every `wfd` process does alike: stop on Ctrl-C, SIGTERM or (for supervisors
//! and test harnesses that own it through a pipe) standard input closing, and serve an
//! axum router until then.

use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct StopArgs {
    /// Stop when standard input closes.
    #[arg(long, hide = true)]
    pub stop_on_stdin_close: bool,
}

/// A token cancelled when the process is asked to stop.
pub fn stop_signal(args: &StopArgs) -> CancellationToken {
    let cancel = CancellationToken::new();
    let stop_on_stdin_close = args.stop_on_stdin_close;
    tokio::spawn({
        let cancel = cancel.clone();
        async move {
            wait_for_stop(stop_on_stdin_close).await;
            tracing::info!("stopping");
            cancel.cancel();
        }
    });
    cancel
}

async fn wait_for_stop(stop_on_stdin_close: bool) {
    let stdin_closed = async {
        if !stop_on_stdin_close {
            return std::future::pending().await;
        }
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
        _ = stdin_closed => {}
    }
}

/// Serves `router` on `listener` until `cancel`.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    axum::serve(listener, router.into_make_service())
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await?;
    Ok(())
}
