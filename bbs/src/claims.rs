//! The reps' ClaimActualLRP and StartActualLRP calls, applied in batches. A rep claims
//! and starts its instances one call at a time (Diego's protocol); at Diego's scale a
//! thousand cells make those calls at once. The calls that arrive while a batch is being
//! written go into the next one, which reads all their rows in one statement, applies
//! each call's transition in arrival order (a call that fails fails alone and writes
//! nothing), writes the changed rows back in one statement, and commits through the
//! [`writer`](crate::writer) before any caller hears back. Each call keeps its own
//! transition, modification tag and events.

use std::collections::{HashMap, HashSet};
use std::sync::Weak;

use sqlx::AnyConnection;
use tokio::sync::{mpsc, oneshot};

use crate::lrp::{actual_not_found, claim, start, stop_on_cell};
use crate::models::*;
use crate::{db, now_ns, Bbs, BbsError, Changes};

/// Calls in one batch at most.
const MAX_BATCH: usize = 1024;

/// What a rep asks of an ActualLRP.
pub(crate) enum Call {
    Claim(ActualLrpInstanceKey),
    /// Starting also drops the SUSPECT and EVACUATING copies of the key that other
    /// instances hold: the instance that runs now replaces them.
    Start(ActualLrpInstanceKey, NetInfo),
}

pub(crate) struct Request {
    key: ActualLrpKey,
    call: Call,
    answer: oneshot::Sender<Result<(), BbsError>>,
}

pub(crate) type Requests = mpsc::UnboundedSender<Request>;

/// Sends `call` to the batcher and waits until its batch is committed.
pub(crate) async fn submit(
    requests: &Requests,
    key: &ActualLrpKey,
    call: Call,
) -> Result<(), BbsError> {
    let (answer, answered) = oneshot::channel();
    let request = Request {
        key: key.clone(),
        call,
        answer,
    };
    let gone = || BbsError::Commit("the BBS is shutting down".into());
    requests.send(request).map_err(|_| gone())?;
    answered.await.map_err(|_| gone())?
}

/// Applies the batches until the BBS is dropped.
pub(crate) async fn run(bbs: Weak<Bbs>, mut requests: mpsc::UnboundedReceiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let Some(bbs) = bbs.upgrade() else { return };
        bbs.apply_calls(std::mem::take(&mut batch)).await;
    }
}

/// The rows of one key as the batch goes: the ORDINARY one and its copies.
#[derive(Default)]
struct Rows {
    ordinary: Option<ActualLrp>,
    copies: Vec<ActualLrp>,
}

impl Bbs {
    async fn apply_calls(&self, batch: Vec<Request>) {
        let now = now_ns();
        let (calls, answers): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|r| ((r.key, r.call), r.answer))
            .unzip();
        let mut changes = Changes::default();
        let outcome = async {
            let mut tx = self.writer.begin().await?;
            let outcomes = apply(&mut tx, calls, now, &mut changes).await?;
            tx.commit().await?;
            Ok::<_, BbsError>(outcomes)
        };
        match outcome.await {
            Ok(outcomes) => {
                self.apply(changes);
                for (answer, outcome) in answers.into_iter().zip(outcomes) {
                    // A caller that gave up is not an error.
                    let _ = answer.send(outcome);
                }
            }
            Err(e) => {
                let e = e.to_string();
                for answer in answers {
                    let _ = answer.send(Err(BbsError::Commit(e.clone())));
                }
            }
        }
    }
}

/// Applies `calls` in order in the open transaction: one read, one write of the
/// changed ORDINARY rows, a delete per replaced copy. Answers each call's outcome.
async fn apply(
    conn: &mut AnyConnection,
    calls: Vec<(ActualLrpKey, Call)>,
    now: i64,
    changes: &mut Changes,
) -> Result<Vec<Result<(), BbsError>>, BbsError> {
    let keys: Vec<&ActualLrpKey> = {
        let mut seen = HashSet::new();
        calls
            .iter()
            .map(|(k, _)| k)
            .filter(|k| seen.insert(*k))
            .collect()
    };
    let mut rows: HashMap<ActualLrpKey, Rows> = HashMap::new();
    for actual in db::actual_lrp_rows_at(conn, &keys).await? {
        let at = rows.entry(actual.key.clone()).or_default();
        if actual.presence == Presence::Ordinary {
            at.ordinary = Some(actual);
        } else {
            at.copies.push(actual);
        }
    }
    let mut changed: HashSet<ActualLrpKey> = HashSet::new();
    let mut outcomes = Vec::with_capacity(calls.len());
    for (key, call) in calls {
        let at = rows.entry(key.clone()).or_default();
        let Some(actual) = at.ordinary.as_mut() else {
            outcomes.push(Err(actual_not_found(&key)));
            continue;
        };
        let before = actual.clone();
        let changed_now = match &call {
            Call::Claim(instance_key) => claim(actual, instance_key, now),
            Call::Start(instance_key, net_info) => {
                start(actual, instance_key, net_info.clone(), now)
            }
        };
        match changed_now {
            Err(e) => outcomes.push(Err(e)),
            Ok(false) => outcomes.push(Ok(())),
            Ok(true) => {
                actual.modification_tag.index += 1;
                changed.insert(key);
                changes.events.push(BbsEvent::ActualLrpChanged {
                    before,
                    after: actual.clone(),
                });
                if matches!(call, Call::Start(..)) {
                    let (replaced, kept) = std::mem::take(&mut at.copies)
                        .into_iter()
                        .partition(|c| c.instance_key != actual.instance_key);
                    at.copies = kept;
                    drop_copies(conn, replaced, now, changes).await?;
                }
                outcomes.push(Ok(()));
            }
        }
    }
    let puts: Vec<ActualLrp> = changed
        .iter()
        .filter_map(|key| rows.get(key).and_then(|at| at.ordinary.clone()))
        .collect();
    db::put_actual_lrps(conn, &puts).await?;
    Ok(outcomes)
}

/// Deletes the SUSPECT and EVACUATING copies that a running instance replaces; a
/// suspect's instance is stopped if its cell is present.
async fn drop_copies(
    conn: &mut AnyConnection,
    replaced: Vec<ActualLrp>,
    now: i64,
    changes: &mut Changes,
) -> Result<(), BbsError> {
    for copy in replaced {
        db::delete_actual_lrp_with_presence(conn, &copy.key, copy.presence).await?;
        if copy.presence == Presence::Suspect {
            let cell_id = &copy.instance_key.cell_id;
            let cells: HashMap<String, String> = db::rep_url(conn, cell_id, now)
                .await?
                .map(|url| (cell_id.clone(), url))
                .into_iter()
                .collect();
            stop_on_cell(&copy, &cells, changes);
        }
        changes
            .events
            .push(BbsEvent::ActualLrpRemoved { actual_lrp: copy });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use wf_messaging::Bus;

    use super::*;
    use crate::testing::*;

    #[tokio::test]
    async fn racing_calls_each_get_their_own_outcome() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            bbs.desire_lrp(desired("web", 50)).await.unwrap();
            let mut events = bbs.subscribe();
            // Two cells race for each index, and one claims an index that does not exist.
            let claims = (0..50u32).flat_map(|index| {
                ["cell-a", "cell-b"].map(|cell| {
                    let bbs = bbs.clone();
                    async move {
                        let ik = instance(&format!("{cell}-{index}"), cell);
                        bbs.claim_actual_lrp(&key("web", index), &ik).await
                    }
                })
            });
            let (missing_key, missing_instance) = (key("web", 99), instance("i", "cell-a"));
            let missing = bbs.claim_actual_lrp(&missing_key, &missing_instance);
            let (results, missing) = tokio::join!(futures::future::join_all(claims), missing);

            assert!(matches!(missing, Err(BbsError::NotFound(_))), "{db}");
            let won = results.iter().filter(|r| r.is_ok()).count();
            let lost = results
                .iter()
                .filter(|r| matches!(r, Err(BbsError::InvalidTransition { .. })))
                .count();
            assert_eq!((won, lost), (50, 50), "{db}");
            for index in 0..50 {
                let claimed = actual(&bbs, "web", index).await.unwrap();
                assert_eq!(claimed.state, ActualLrpState::Claimed, "{db}");
                assert_eq!(claimed.modification_tag.index, 1, "{db}");
                let event = events.recv().await.unwrap();
                assert!(
                    matches!(event, BbsEvent::ActualLrpChanged { .. }),
                    "{db}: {event:?}"
                );
            }

            // The winner starts its instance; the loser cannot.
            let winner = actual(&bbs, "web", 0).await.unwrap().instance_key;
            let (key0, loser) = (key("web", 0), instance("other", "cell-c"));
            let (started, refused) = tokio::join!(
                bbs.start_actual_lrp(&key0, &winner, net_info(61000)),
                bbs.start_actual_lrp(&key0, &loser, net_info(61001)),
            );
            started.unwrap();
            assert!(matches!(refused, Err(BbsError::InvalidTransition { .. })));
            let running = actual(&bbs, "web", 0).await.unwrap();
            assert_eq!(running.state, ActualLrpState::Running);
            assert_eq!(running.instance_key, winner);
        }
    }
}
