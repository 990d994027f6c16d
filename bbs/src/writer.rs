//! Group commit of the BBS's writes. Writes run one at a time (the active BBS is the
//! only writer of its database, see the crate docs), each in a savepoint of a shared
//! transaction. The transaction commits as soon as no other write is waiting, or when
//! the batch is full, or after [`MAX_BATCH_AGE`]: a burst of writes (the reps claiming
//! and starting thousands of instances after a big auction) pays for one commit, not
//! one each, while a lone write commits at once. A write returns only once the commit
//! that holds it is done, so a caller never sees a write that could still be lost.
//!
//! A write that fails or is dropped before [`WriteTx::commit`] is rolled back to its
//! savepoint; the other writes of its batch are not affected.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Any, AnyConnection, AnyPool, Transaction};
use tokio::sync::{watch, Mutex, MutexGuard};

use crate::BbsError;

/// Writes in one transaction at most.
const MAX_BATCH: usize = 512;
/// An open batch commits by itself after this long, whoever is (not) waiting.
pub(crate) const MAX_BATCH_AGE: Duration = Duration::from_millis(20);

/// The outcome of a batch's commit: `None` until it is known.
type Outcome = Option<Result<(), String>>;

#[derive(Clone)]
pub(crate) struct Writer {
    inner: Arc<Inner>,
}

struct Inner {
    pool: AnyPool,
    state: Mutex<State>,
    /// Writes waiting for `state`: while there are some, a finished write leaves the
    /// batch open for them.
    waiting: AtomicUsize,
    next_batch: AtomicU64,
}

#[derive(Default)]
struct State {
    batch: Option<Batch>,
    /// The last write left without committing: its savepoint must be rolled back
    /// before anything else runs in the transaction.
    dirty: bool,
}

struct Batch {
    id: u64,
    tx: Transaction<'static, Any>,
    writes: usize,
    outcome: watch::Sender<Outcome>,
}

/// One write: derefs to the connection of the shared transaction.
pub(crate) struct WriteTx<'a> {
    writer: &'a Writer,
    guard: Option<MutexGuard<'a, State>>,
}

impl Writer {
    pub(crate) fn new(pool: AnyPool) -> Writer {
        Writer {
            inner: Arc::new(Inner {
                pool,
                state: Mutex::new(State::default()),
                waiting: AtomicUsize::new(0),
                next_batch: AtomicU64::new(0),
            }),
        }
    }

    /// Starts a write, waiting for the one before it to finish.
    pub(crate) async fn begin(&self) -> Result<WriteTx<'_>, BbsError> {
        self.inner.waiting.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.inner.state.lock().await;
        self.inner.waiting.fetch_sub(1, Ordering::SeqCst);
        settle(&mut guard).await?;
        if guard.batch.is_none() {
            let id = self.inner.next_batch.fetch_add(1, Ordering::Relaxed);
            // IMMEDIATE on SQLite: a write that reads first must not find its snapshot
            // outdated by the lock refresh's commit (SQLITE_BUSY_SNAPSHOT).
            let tx = wf_db::begin_write(&self.inner.pool).await?;
            let (outcome, _) = watch::channel(None);
            guard.batch = Some(Batch {
                id,
                tx,
                writes: 0,
                outcome,
            });
            tokio::spawn(flush_later(self.inner.clone(), id));
        }
        let batch = guard.batch.as_mut().expect("a batch is open");
        if let Err(e) = sqlx::query("SAVEPOINT bbs_write")
            .execute(&mut *batch.tx)
            .await
        {
            // The transaction is unusable: end it, and every write in it.
            fail(&mut guard, &e.to_string());
            return Err(e.into());
        }
        guard.dirty = true;
        Ok(WriteTx {
            writer: self,
            guard: Some(guard),
        })
    }
}

impl WriteTx<'_> {
    /// Keeps this write and returns once it is committed with its batch.
    pub(crate) async fn commit(mut self) -> Result<(), BbsError> {
        let mut guard = self.guard.take().expect("a write holds the state");
        let state = &mut *guard;
        let batch = state.batch.as_mut().expect("a write runs in a batch");
        if let Err(e) = sqlx::query("RELEASE SAVEPOINT bbs_write")
            .execute(&mut *batch.tx)
            .await
        {
            // Left dirty: the next user rolls this write back.
            return Err(e.into());
        }
        state.dirty = false;
        batch.writes += 1;
        let mut outcome = batch.outcome.subscribe();
        let full = batch.writes >= MAX_BATCH;
        if full || self.writer.inner.waiting.load(Ordering::SeqCst) == 0 {
            commit(&mut guard).await;
        }
        drop(guard);
        let result = outcome
            .wait_for(Option::is_some)
            .await
            .map_err(|_| BbsError::Commit("the batch was dropped".into()))?
            .clone();
        match result {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(BbsError::Commit(e)),
            None => unreachable!("waited for an outcome"),
        }
    }
}

impl Deref for WriteTx<'_> {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        let batch = self.guard.as_ref().and_then(|g| g.batch.as_ref());
        &batch.expect("a write runs in a batch").tx
    }
}

impl DerefMut for WriteTx<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        let batch = self.guard.as_mut().and_then(|g| g.batch.as_mut());
        &mut batch.expect("a write runs in a batch").tx
    }
}

/// Rolls back the savepoint of a write that left without committing.
async fn settle(state: &mut State) -> Result<(), BbsError> {
    if !state.dirty {
        return Ok(());
    }
    let Some(batch) = state.batch.as_mut() else {
        state.dirty = false;
        return Ok(());
    };
    let rolled_back = async {
        sqlx::query("ROLLBACK TO SAVEPOINT bbs_write")
            .execute(&mut *batch.tx)
            .await?;
        sqlx::query("RELEASE SAVEPOINT bbs_write")
            .execute(&mut *batch.tx)
            .await
    };
    match rolled_back.await {
        Ok(_) => {
            state.dirty = false;
            Ok(())
        }
        Err(e) => {
            fail(state, &e.to_string());
            Err(e.into())
        }
    }
}

/// Commits the open batch and tells its writes how it went.
async fn commit(state: &mut State) {
    if let Err(e) = settle(state).await {
        tracing::warn!(error = %e, "BBS write batch failed");
        return;
    }
    let Some(batch) = state.batch.take() else {
        return;
    };
    let result = batch.tx.commit().await.map_err(|e| e.to_string());
    if let Err(e) = &result {
        tracing::warn!(error = %e, writes = batch.writes, "BBS write batch did not commit");
    }
    batch.outcome.send_replace(Some(result));
}

/// Ends the open batch unsuccessfully (its transaction rolls back when dropped).
fn fail(state: &mut State, error: &str) {
    state.dirty = false;
    if let Some(batch) = state.batch.take() {
        batch.outcome.send_replace(Some(Err(error.to_string())));
    }
}

/// Commits batch `id` after [`MAX_BATCH_AGE`] if it is still open: the last write of a
/// burst may have left it for a waiter that gave up.
async fn flush_later(inner: Arc<Inner>, id: u64) {
    tokio::time::sleep(MAX_BATCH_AGE).await;
    let mut guard = inner.state.lock().await;
    if guard.batch.as_ref().is_some_and(|b| b.id == id) {
        commit(&mut guard).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{databases, open};
    use wf_messaging::Bus;

    async fn count(pool: &AnyPool) -> i64 {
        use sqlx::Row as _;
        sqlx::query("SELECT COUNT(*) FROM locks")
            .fetch_one(pool)
            .await
            .unwrap()
            .get::<i64, _>(0)
    }

    async fn insert(writer: &Writer, key: &str, keep: bool) -> Result<(), BbsError> {
        let mut tx = writer.begin().await?;
        sqlx::query("INSERT INTO locks (lock_key, owner, expires_at) VALUES ($1, 'o', 0)")
            .bind(key.to_string())
            .execute(&mut *tx)
            .await?;
        if keep {
            tx.commit().await
        } else {
            Ok(())
        }
    }

    #[tokio::test]
    async fn concurrent_writes_share_commits_and_a_dropped_write_is_undone_alone() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            let writer = Writer::new(bbs.pool.clone());
            let writes = (0..200).map(|i| {
                let writer = writer.clone();
                async move { insert(&writer, &format!("k{i}"), i % 10 != 0).await }
            });
            let results = futures::future::join_all(writes).await;
            assert!(results.iter().all(Result::is_ok), "{db}");
            // Every tenth write left without committing: only those are missing.
            assert_eq!(count(&bbs.pool).await, 180, "{db}");
            assert!(
                writer.inner.next_batch.load(Ordering::Relaxed) < 200,
                "{db}: writes were batched"
            );

            // A failing statement rolls back its own write only.
            insert(&writer, "k1", true).await.unwrap_err();
            insert(&writer, "new", true).await.unwrap();
            assert_eq!(count(&bbs.pool).await, 181, "{db}");
        }
    }

    /// Issue 12: one push in a thousand failed with "database is locked" (517) when the
    /// lock refresh committed while a batch was between its first read and its first
    /// write. A SQLite file, as in production (the test databases are in memory).
    #[tokio::test]
    async fn a_write_that_reads_first_survives_the_lock_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("bbs.db").display());
        let config = crate::BbsConfig {
            database_url: url,
            ..Default::default()
        };
        let bbs = crate::Bbs::open(config, Bus::in_process()).await.unwrap();
        let mut lock = bbs.lock("bbs", "me", std::time::Duration::from_secs(15));
        assert!(lock.try_acquire().await.unwrap());
        let writer = Writer::new(bbs.pool.clone());
        for round in 0..10 {
            let mut tx = writer.begin().await.unwrap();
            let before = {
                use sqlx::Row as _;
                sqlx::query("SELECT COUNT(*) FROM locks")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap()
                    .get::<i64, _>(0)
            };
            let refresh =
                tokio::spawn(async move { lock.try_acquire().await.map(|held| (held, lock)) });
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            sqlx::query("INSERT INTO locks (lock_key, owner, expires_at) VALUES ($1, 'o', 0)")
                .bind(format!("k{before}"))
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            tx.commit().await.unwrap();
            let (held, returned) = refresh.await.unwrap().unwrap();
            assert!(held, "round {round}: the refresh kept the lock");
            lock = returned;
        }
        assert_eq!(count(&bbs.pool).await, 11);
    }
}
