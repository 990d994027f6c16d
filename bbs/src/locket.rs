//! Locket's locks in the BBS database: a singleton (the active BBS, with its
//! convergence, auctioneer and route-emitter) runs only while it holds its lock, so
//! that two or more copies can run for availability and exactly one acts.
//!
//! A lock is a row (key, owner, expiry). The holder refreshes it every third of its TTL
//! (Locket: 15 s TTL, refreshed every 5 s); another may take it once it has seen the
//! row unchanged for a whole TTL, timed on its own monotonic clock: no two machines'
//! wall clocks are compared (a holder whose clock stepped back wrote an expiry that
//! looks past to everyone else, and lost a lock it was refreshing). A holder that
//! cannot refresh within a TTL of its last refresh gives up: it must stop acting before
//! someone else may start.

use std::time::{Duration, Instant};

use sqlx::AnyPool;
use tokio_util::sync::CancellationToken;

use crate::{duration_ns, now_ns, Bbs, BbsError};

/// Locket's lock TTL.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(15);

/// A lock this process wants or holds.
pub struct Lock {
    pool: AnyPool,
    key: String,
    owner: String,
    ttl: Duration,
    /// Someone else's row as first seen unchanged (owner, expiry), and when.
    seen: std::sync::Mutex<Option<(String, i64, Instant)>>,
}

impl Bbs {
    /// The lock `key`, to be held by `owner` (unique per process: e.g. host name and pid).
    pub fn lock(&self, key: &str, owner: &str, ttl: Duration) -> Lock {
        Lock {
            pool: self.pool.clone(),
            key: key.to_string(),
            owner: owner.to_string(),
            ttl,
            seen: std::sync::Mutex::new(None),
        }
    }
}

impl Lock {
    /// Takes the lock or refreshes it; false while someone else holds it (until their
    /// row has been seen unchanged for a TTL).
    pub async fn try_acquire(&self) -> Result<bool, BbsError> {
        let expires_at = now_ns().saturating_add(duration_ns(self.ttl));
        let done = sqlx::query(
            "INSERT INTO locks (lock_key, owner, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (lock_key) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
             WHERE locks.owner = excluded.owner",
        )
        .bind(self.key.clone())
        .bind(self.owner.clone())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            *self.seen() = None;
            return Ok(true);
        }
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT owner, expires_at FROM locks WHERE lock_key = $1")
                .bind(self.key.clone())
                .fetch_optional(&self.pool)
                .await?;
        // Released meanwhile: the next attempt inserts it.
        let Some((owner, their_expiry)) = row else {
            return Ok(false);
        };
        let stale = {
            let mut seen = self.seen();
            match &*seen {
                Some((o, e, since)) if *o == owner && *e == their_expiry => {
                    since.elapsed() >= self.ttl
                }
                _ => {
                    *seen = Some((owner.clone(), their_expiry, Instant::now()));
                    false
                }
            }
        };
        if !stale {
            return Ok(false);
        }
        // Not refreshed for a TTL: take it, unless it changed since it was seen.
        let taken = sqlx::query(
            "UPDATE locks SET owner = $2, expires_at = $3
             WHERE lock_key = $1 AND owner = $4 AND expires_at = $5",
        )
        .bind(self.key.clone())
        .bind(self.owner.clone())
        .bind(expires_at)
        .bind(owner)
        .bind(their_expiry)
        .execute(&self.pool)
        .await?;
        *self.seen() = None;
        Ok(taken.rows_affected() == 1)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Option<(String, i64, Instant)>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the lock is ours (or `cancel`: false).
    pub async fn acquire(&self, cancel: &CancellationToken) -> bool {
        let mut waiting_logged = false;
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    tracing::info!(key = %self.key, owner = %self.owner, "lock acquired");
                    return true;
                }
                Ok(false) if !waiting_logged => {
                    tracing::info!(key = %self.key, "lock held elsewhere; waiting for it");
                    waiting_logged = true;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(key = %self.key, error = %e, "cannot take the lock"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(self.retry_interval()) => {}
            }
        }
    }

    /// Refreshes the held lock until `cancel`, then releases it. Returns early, with
    /// the reason, when the lock is lost: taken by another owner, or not refreshed
    /// before the expiry last written.
    pub async fn hold(&self, cancel: &CancellationToken) -> Result<(), LockLost> {
        let mut held_until = Instant::now() + self.ttl;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    self.release().await;
                    return Ok(());
                }
                _ = tokio::time::sleep(self.retry_interval()) => {}
            }
            let attempt = Instant::now();
            match tokio::time::timeout_at(held_until.into(), self.try_acquire()).await {
                Ok(Ok(true)) => held_until = attempt + self.ttl,
                Ok(Ok(false)) => return Err(LockLost::TakenOver),
                Ok(Err(e)) if Instant::now() < held_until => {
                    tracing::warn!(key = %self.key, error = %e, "cannot refresh the lock; retrying");
                }
                Ok(Err(_)) | Err(_) => return Err(LockLost::Expired),
            }
        }
    }

    async fn release(&self) {
        let released = sqlx::query("DELETE FROM locks WHERE lock_key = $1 AND owner = $2")
            .bind(self.key.clone())
            .bind(self.owner.clone())
            .execute(&self.pool)
            .await;
        if let Err(e) = released {
            tracing::warn!(key = %self.key, error = %e, "cannot release the lock; it expires by itself");
        }
    }

    fn retry_interval(&self) -> Duration {
        self.ttl / 3
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LockLost {
    #[error("another owner took the lock")]
    TakenOver,
    #[error("the lock could not be refreshed before it expired")]
    Expired,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{databases, open};
    use wf_messaging::Bus;

    #[tokio::test]
    async fn one_owner_at_a_time_and_expired_locks_move_on() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            let ttl = Duration::from_millis(300);
            let a = bbs.lock("bbs", "a", ttl);
            let b = bbs.lock("bbs", "b", ttl);
            assert!(a.try_acquire().await.unwrap(), "{db}");
            assert!(!b.try_acquire().await.unwrap(), "{db}");
            assert!(a.try_acquire().await.unwrap(), "a refreshes its own lock");
            // b times the row from when it sees it as it now is.
            assert!(!b.try_acquire().await.unwrap(), "{db}");
            tokio::time::sleep(ttl + Duration::from_millis(50)).await;
            assert!(b.try_acquire().await.unwrap(), "an expired lock is free");
            assert!(!a.try_acquire().await.unwrap());
            // Other keys are independent.
            assert!(bbs.lock("other", "a", ttl).try_acquire().await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_holder_whose_clock_stepped_back_keeps_its_lock() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            let ttl = Duration::from_millis(300);
            let a = bbs.lock("bbs", "a", ttl);
            let b = bbs.lock("bbs", "b", ttl);
            assert!(a.try_acquire().await.unwrap(), "{db}");
            // a's wall clock is far behind: the expiry it writes is long past for b.
            for _ in 0..4 {
                sqlx::query("UPDATE locks SET expires_at = expires_at - 120000000000")
                    .execute(&bbs.pool)
                    .await
                    .unwrap();
                assert!(
                    !b.try_acquire().await.unwrap(),
                    "{db}: taken from a live holder"
                );
                tokio::time::sleep(ttl / 3).await;
                assert!(a.try_acquire().await.unwrap(), "{db}: a keeps refreshing");
            }
            // Once a stops refreshing, b takes the lock a TTL after it last saw it change.
            assert!(!b.try_acquire().await.unwrap());
            tokio::time::sleep(ttl + Duration::from_millis(50)).await;
            assert!(b.try_acquire().await.unwrap(), "{db}");
        }
    }

    #[tokio::test]
    async fn a_holder_learns_it_lost_the_lock_and_releases_on_cancel() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            let ttl = Duration::from_millis(300);
            let a = bbs.lock("bbs", "a", ttl);
            let b = bbs.lock("bbs", "b", ttl);
            let cancel = CancellationToken::new();
            assert!(a.acquire(&cancel).await);
            // Someone rewrites the row (an operator, or a clock far ahead): a notices.
            sqlx::query("UPDATE locks SET owner = 'b'")
                .execute(&bbs.pool)
                .await
                .unwrap();
            assert_eq!(a.hold(&cancel).await, Err(LockLost::TakenOver), "{db}");

            // b holds it until cancelled, then releases it at once.
            let held = {
                let cancel = cancel.clone();
                tokio::spawn(async move { b.hold(&cancel).await })
            };
            tokio::time::sleep(ttl).await;
            assert!(!a.try_acquire().await.unwrap());
            cancel.cancel();
            assert_eq!(held.await.unwrap(), Ok(()));
            assert!(
                a.try_acquire().await.unwrap(),
                "released without waiting for the TTL"
            );
        }
    }
}
