//! Following BBS Tasks: staging (builds) and CF tasks both keep a CC record in step with
//! a BBS Task of their domain, on the BBS's task events and by a rescan every second
//! that heals what events miss (a lagged or closed event stream, a restart).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use wf_bbs::{BbsEvent, Task};

use crate::error::ApiError;
use crate::Controller;

const RESCAN_INTERVAL: Duration = Duration::from_secs(1);
/// An unfinished record whose BBS Task the BBS does not know after this long (seconds
/// since the record was made) has lost it.
pub(crate) const LOST_TASK_GRACE_SECS: i64 = 30;

/// The CC side of the BBS Tasks of one domain.
pub(crate) trait TaskFollower {
    /// The BBS domain whose tasks this follows.
    const DOMAIN: &'static str;
    /// What log lines call these tasks.
    const WHAT: &'static str;

    /// Compares every unfinished CC record with its BBS Task.
    fn rescan(controller: &Controller) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Records a BBS Task of [`Self::DOMAIN`] that changed.
    fn changed(
        controller: &Controller,
        task: &Task,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// Follows `F`'s tasks until cancelled.
pub(crate) async fn follow<F: TaskFollower>(
    controller: Arc<Controller>,
    cancel: CancellationToken,
) {
    let mut events = controller.bbs.subscribe();
    let mut events_open = true;
    let mut ticker = tokio::time::interval(RESCAN_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {
                if let Err(e) = F::rescan(&controller).await {
                    tracing::warn!(error = %e, "{} rescan failed", F::WHAT);
                }
            }
            event = events.recv(), if events_open => match event {
                Ok(BbsEvent::TaskChanged { after, .. }) if after.domain == F::DOMAIN => {
                    if let Err(e) = F::changed(&controller, &after).await {
                        tracing::warn!(task = %after.task_guid, error = %e, "cannot record the {} state", F::WHAT);
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                // The BBS stopped publishing: the rescans carry on alone.
                Err(RecvError::Closed) => events_open = false,
            },
        }
    }
}
