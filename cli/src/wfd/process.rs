//! What every `wfd` process does alike: raise its open-files limit, stop on Ctrl-C,
//! SIGTERM or (for supervisors and test harnesses that own it through a pipe) standard
//! input closing, and serve an axum router until then.

use std::net::SocketAddr;

use anyhow::Context as _;
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

/// Binds `addr` for `what` (e.g. "the BBS API"), saying which on failure.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {what} to {addr}"))
}

/// Binds a socket to `addr` without listening yet: the address is this process's, and
/// connections to it are refused until [`tokio::net::TcpSocket::listen`].
pub fn reserve(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .with_context(|| format!("creating a socket for {what}"))?;
    // As TcpListener::bind does: a restarted process may bind while old connections
    // linger in TIME_WAIT.
    socket
        .set_reuseaddr(true)
        .and_then(|()| socket.bind(addr))
        .with_context(|| format!("binding {what} to {addr}"))?;
    Ok(socket)
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

/// Raises the soft limit on open files to the hard limit: a cell holds a few
/// descriptors per container (its port, `/app`, `/tmp`) and a router two per proxied
/// connection, so the usual soft limit of 1,024 would cap a cell far below its memory.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
        }
    };
    if raised {
        tracing::debug!(open_files = limit.rlim_cur, "open-files limit raised");
    } else {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot raise the open-files limit"
        );
    }
}
