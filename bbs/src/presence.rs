//! Domains and cell presences (Locket's records): both expire after their TTL unless
//! refreshed. A fresh domain lets convergence retire what CC no longer wants; a present
//! cell takes part in the auction.

use std::time::Duration;

use crate::models::{CellPresence, TaskState};
use crate::{db, duration_ns, now_ns, Bbs, BbsError, TaskFilter};

impl Bbs {
    pub async fn upsert_domain(&self, domain: &str, ttl: Duration) -> Result<(), BbsError> {
        if domain.is_empty() {
            return Err(BbsError::InvalidRecord("domain is empty".into()));
        }
        let expires_at = now_ns().saturating_add(duration_ns(ttl));
        let mut tx = self.writer.begin().await?;
        db::upsert_domain(&mut tx, domain, expires_at).await?;
        tx.commit().await
    }

    /// The domains that are fresh now.
    pub async fn domains(&self) -> Result<Vec<String>, BbsError> {
        let mut conn = self.pool.acquire().await?;
        db::fresh_domains(&mut conn, now_ns()).await
    }

    /// Creates or refreshes a cell's presence, which expires after `ttl`. A cell that
    /// (re)appears gets a chance at everything waiting for placement.
    pub async fn set_cell_presence(
        &self,
        presence: &CellPresence,
        ttl: Duration,
    ) -> Result<(), BbsError> {
        if presence.cell_id.is_empty() || presence.rep_url.is_empty() {
            return Err(BbsError::InvalidRecord(
                "cell presence needs a cell_id and a rep_url".into(),
            ));
        }
        let now = now_ns();
        let expires_at = now.saturating_add(duration_ns(ttl));
        let appeared = {
            let mut tx = self.writer.begin().await?;
            // The usual case, a refresh of an unchanged presence, only moves the expiry.
            let appeared = if db::refresh_cell_presence(&mut tx, presence, expires_at, now).await? {
                false
            } else {
                let present = db::cell_is_present(&mut tx, &presence.cell_id, now).await?;
                db::put_cell_presence(&mut tx, presence, expires_at).await?;
                !present
            };
            tx.commit().await?;
            appeared
        };
        if appeared {
            tracing::info!(cell_id = %presence.cell_id, rep_url = %presence.rep_url, "cell present");
            self.auction_all_waiting().await?;
        }
        Ok(())
    }

    pub async fn remove_cell_presence(&self, cell_id: &str) -> Result<(), BbsError> {
        let mut tx = self.writer.begin().await?;
        db::delete_cell_presence(&mut tx, cell_id).await?;
        tx.commit().await
    }

    /// Cells whose presence has not expired.
    pub async fn cells(&self) -> Result<Vec<CellPresence>, BbsError> {
        let mut conn = self.pool.acquire().await?;
        db::cells(&mut conn, now_ns()).await
    }

    /// Queues every UNCLAIMED ActualLRP and PENDING Task for the next auction.
    pub(crate) async fn auction_all_waiting(&self) -> Result<(), BbsError> {
        let (lrps, tasks) = {
            let mut conn = self.pool.acquire().await?;
            let lrps = db::unclaimed_actual_lrp_keys(&mut conn, None).await?;
            let tasks = db::tasks(&mut conn, &TaskFilter::default()).await?;
            (lrps, tasks)
        };
        self.auction.push(
            lrps,
            tasks
                .into_iter()
                .filter(|t| t.state == TaskState::Pending)
                .map(|t| t.task_guid),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use wf_messaging::Bus;

    use super::*;
    use crate::models::Resources;
    use crate::testing::{databases, open};

    #[tokio::test]
    async fn presences_and_domains_expire() {
        for db in databases().await {
            let bbs = open(&db, Bus::in_process()).await;
            let cell = CellPresence {
                cell_id: "cell-0".into(),
                rep_url: "http://127.0.0.1:1800".into(),
                zone: "z1".into(),
                capacity: Resources::default(),
                placement_tags: vec![],
            };
            bbs.set_cell_presence(&cell, Duration::from_secs(60))
                .await
                .unwrap();
            bbs.set_cell_presence(&cell, Duration::from_secs(60))
                .await
                .unwrap();
            assert_eq!(bbs.cells().await.unwrap(), vec![cell.clone()]);
            bbs.set_cell_presence(&cell, Duration::ZERO).await.unwrap();
            assert!(bbs.cells().await.unwrap().is_empty());

            bbs.upsert_domain("cf-apps", Duration::from_secs(120))
                .await
                .unwrap();
            bbs.upsert_domain("cf-tasks", Duration::ZERO).await.unwrap();
            assert_eq!(bbs.domains().await.unwrap(), vec!["cf-apps".to_string()]);
        }
    }
}
