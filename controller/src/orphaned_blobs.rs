//! Orphaned blob cleanup, CF's periodic job: deletes the blobs no record points to.
//!
//! Every `orphaned_blobs_interval` a pass reads what is in use, then lists the package,
//! droplet, buildpack and buildpack cache blobs and deletes those nothing needs. What it
//! guarantees:
//!
//! - **Grace period.** A blob is deleted only when two passes at least
//!   `orphaned_blobs_grace` apart both found it orphaned, and it was last written more
//!   than the grace period ago. A pass that races a new upload or a new record therefore
//!   never deletes a blob that is about to be used.
//! - **Never a needed blob.** In use, and so never deleted: the blob of every package
//!   and droplet record (whatever its state), and the zip of every buildpack record;
//!   the package and droplet of every build in progress; each app's current droplet,
//!   and the buildpack cache of every app; every droplet a DesiredLRP or a task in the
//!   BBS runs, and every package, buildpack zip and buildpack cache a staging task
//!   fetches, and droplet and cache it uploads (read from the BBS: a running instance
//!   or an in-flight staging keeps its blobs even when their records are gone). When the
//!   database or the BBS cannot be read, the pass deletes nothing.
//! - **Bounded.** At most [`MAX_DELETES_PER_PASS`] deletions a pass; the rest wait for
//!   the next one. Errors are logged and the next pass tries again.
//!
//! The resource cache is not swept: it is keyed by content and shared by every app.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use object_store::path::Path as Key;
use tokio_util::sync::CancellationToken;
use wf_bbs::{BbsError, DesiredLrpFilter, TaskAction, TaskFilter};

use crate::blobstore::{BlobError, BlobKind, Blobstore};
use crate::db::{App, Build, BuildState, Buildpack, Droplet, Filter, Package};
use crate::signed_urls::blob_of_url;
use crate::Controller;

/// The most blobs one pass deletes.
pub const MAX_DELETES_PER_PASS: usize = 1000;

/// The shortest interval between passes.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// The kinds of blob a pass sweeps.
const SWEPT: [BlobKind; 4] = [
    BlobKind::Package,
    BlobKind::Droplet,
    BlobKind::Buildpack,
    BlobKind::BuildpackCache,
];

#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("reading the CC database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("reading the BBS: {0}")]
    Bbs(#[from] BbsError),
    #[error("blobstore: {0}")]
    Blobstore(#[from] BlobError),
}

/// The guids whose blobs are in use.
#[derive(Debug, Default)]
pub struct InUse {
    packages: HashSet<String>,
    droplets: HashSet<String>,
    buildpacks: HashSet<String>,
    apps: HashSet<String>,
}

impl InUse {
    /// What the CC database and the BBS say is in use (see the module docs).
    pub async fn read(controller: &Controller) -> Result<InUse, CleanupError> {
        let mut in_use = InUse::default();
        let db = &controller.db;
        in_use.packages.extend(
            db.find::<Package>(Filter::new())
                .await?
                .into_iter()
                .map(|p| p.guid),
        );
        in_use.droplets.extend(
            db.find::<Droplet>(Filter::new())
                .await?
                .into_iter()
                .map(|d| d.guid),
        );
        in_use.buildpacks.extend(
            db.find::<Buildpack>(Filter::new())
                .await?
                .into_iter()
                .map(|b| b.guid),
        );
        for build in db
            .find::<Build>(Filter::new().eq("state", BuildState::Staging))
            .await?
        {
            in_use.packages.insert(build.package_guid);
            in_use.droplets.insert(build.droplet_guid);
        }
        for app in db.find::<App>(Filter::new()).await? {
            in_use.droplets.extend(app.droplet_guid);
            in_use.apps.insert(app.guid);
        }
        let lrps = controller
            .bbs
            .desired_lrps(&DesiredLrpFilter::default())
            .await?;
        let mut urls: Vec<String> = lrps.into_iter().map(|l| l.action.droplet_uri).collect();
        for task in controller.bbs.tasks(&TaskFilter::default()).await? {
            match task.definition.action {
                TaskAction::Stage(stage) => {
                    urls.push(stage.package_uri);
                    urls.push(stage.droplet_upload_uri);
                    urls.extend(stage.buildpacks.into_iter().filter_map(|b| b.url));
                    urls.extend(stage.buildpack_cache_download_uri);
                    urls.extend(stage.buildpack_cache_upload_uri);
                }
                TaskAction::Run(run) => urls.push(run.droplet_uri),
            }
        }
        for url in &urls {
            in_use.add_url(url);
        }
        Ok(in_use)
    }

    /// Marks the blob a signed blob URL names as in use.
    fn add_url(&mut self, url: &str) {
        match blob_of_url(url) {
            Some((BlobKind::Package, guid)) => self.packages.insert(guid.to_string()),
            Some((BlobKind::Droplet, guid)) => self.droplets.insert(guid.to_string()),
            Some((BlobKind::Buildpack, guid)) => self.buildpacks.insert(guid.to_string()),
            Some((BlobKind::BuildpackCache, guid)) => self.apps.insert(guid.to_string()),
            Some((BlobKind::Resource, _)) | None => false,
        };
    }

    /// Whether the blob under `key` (of `kind`) is needed; a key that does not follow
    /// the layout is kept.
    fn needs(&self, kind: BlobKind, key: &Key) -> bool {
        let Some(guid) = kind.guid_of(key) else {
            return true;
        };
        match kind {
            BlobKind::Package => self.packages.contains(&guid),
            BlobKind::Droplet => self.droplets.contains(&guid),
            BlobKind::Buildpack => self.buildpacks.contains(&guid),
            BlobKind::BuildpackCache => self.apps.contains(&guid),
            BlobKind::Resource => true,
        }
    }
}

/// The cleanup's memory between passes: the orphans it has seen, and since when.
pub struct Sweeper {
    grace: Duration,
    candidates: HashMap<String, Instant>,
}

impl Sweeper {
    pub fn new(grace: Duration) -> Sweeper {
        Sweeper {
            grace,
            candidates: HashMap::new(),
        }
    }

    /// One pass over `blobs` against `in_use` (read before this pass); returns how many
    /// blobs it deleted.
    pub async fn sweep(&mut self, blobs: &Blobstore, in_use: &InUse) -> Result<usize, BlobError> {
        let now = Instant::now();
        let written_before =
            time::OffsetDateTime::now_utc().unix_timestamp() - self.grace.as_secs() as i64;
        let mut orphans = HashMap::new();
        let mut deleted = 0;
        for kind in SWEPT {
            let mut listing = blobs.list(kind);
            while let Some(meta) = listing.try_next().await? {
                if in_use.needs(kind, &meta.location) {
                    continue;
                }
                let key = meta.location.to_string();
                let seen = self.candidates.get(&key).copied();
                let expired = seen.is_some_and(|seen| now.duration_since(seen) >= self.grace)
                    && meta.last_modified.timestamp() <= written_before;
                if expired && deleted < MAX_DELETES_PER_PASS {
                    blobs.delete(&meta.location).await?;
                    tracing::info!(blob = %key, "deleted an orphaned blob");
                    deleted += 1;
                } else {
                    orphans.insert(key, seen.unwrap_or(now));
                }
            }
        }
        self.candidates = orphans;
        Ok(deleted)
    }
}

/// Runs a pass every `orphaned_blobs_interval` (at least [`MIN_INTERVAL`]) until
/// cancelled.
pub async fn run(controller: Arc<Controller>, cancel: CancellationToken) {
    let mut sweeper = Sweeper::new(controller.config.orphaned_blobs_grace);
    let period = controller.config.orphaned_blobs_interval.max(MIN_INTERVAL);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let pass = async {
            let in_use = InUse::read(&controller).await?;
            Ok::<_, CleanupError>(sweeper.sweep(&controller.blobs, &in_use).await?)
        };
        match pass.await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "orphaned blob cleanup"),
            Err(e) => {
                tracing::warn!(error = %e, "orphaned blob cleanup failed; retrying next pass")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use object_store::ObjectMeta;

    async fn put(blobs: &Blobstore, key: &Key) {
        let tmp = blobs.temp_path();
        let chunks = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"x"))]);
        let sha256 = blobs.write_stream(&tmp, chunks).await.unwrap();
        blobs.put_file(&tmp, key, &sha256).await.unwrap();
        blobs.remove_temp(&tmp).await.unwrap();
    }

    async fn keys(blobs: &Blobstore) -> Vec<String> {
        let mut keys = Vec::new();
        for kind in [
            BlobKind::Package,
            BlobKind::Droplet,
            BlobKind::Buildpack,
            BlobKind::Resource,
            BlobKind::BuildpackCache,
        ] {
            let listed: Vec<ObjectMeta> = blobs.list(kind).try_collect().await.unwrap();
            keys.extend(listed.into_iter().map(|m| m.location.to_string()));
        }
        keys.sort();
        keys
    }

    #[test]
    fn signed_urls_mark_their_blobs_in_use() {
        let mut in_use = InUse::default();
        in_use.add_url("http://cc/internal/v4/droplets/d1/download?expires=1&signature=ab");
        in_use.add_url("http://cc/internal/v4/droplets/d2/upload?expires=1&signature=ab");
        in_use.add_url("http://cc/internal/v4/packages/p1/download?expires=1&signature=ab");
        in_use.add_url("http://cc/internal/v4/buildpacks/b1/download?expires=1&signature=ab");
        in_use.add_url("http://cc/internal/v4/buildpack_cache/a1/upload?expires=1&signature=ab");
        in_use.add_url("http://cc/v3/packages/p2/download");
        in_use.add_url("garbage");
        assert_eq!(in_use.droplets, HashSet::from(["d1".into(), "d2".into()]));
        assert_eq!(in_use.packages, HashSet::from(["p1".into()]));
        assert_eq!(in_use.buildpacks, HashSet::from(["b1".into()]));
        assert_eq!(in_use.apps, HashSet::from(["a1".into()]));
    }

    #[tokio::test]
    async fn orphans_go_after_the_grace_period_and_needed_blobs_stay() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobstore::open(dir.path(), None).await.unwrap();
        let needed = [
            blobs.package_key("p-used"),
            blobs.droplet_key("d-used"),
            blobs.buildpack_cache_key("a-used", "wasm"),
            blobs.buildpack_key("b-used"),
            // Not swept at all.
            blobs.resource_key(&"ab".repeat(20)).unwrap(),
            Key::from("packages/not-in-the-layout"),
        ];
        let orphans = [
            blobs.package_key("p-gone"),
            blobs.droplet_key("d-gone"),
            blobs.buildpack_cache_key("a-gone", "wasm"),
            blobs.buildpack_key("b-gone"),
        ];
        for key in needed.iter().chain(&orphans) {
            put(&blobs, key).await;
        }
        let mut in_use = InUse::default();
        in_use.packages.insert("p-used".into());
        in_use.droplets.insert("d-used".into());
        in_use.apps.insert("a-used".into());
        in_use.buildpacks.insert("b-used".into());
        let all = keys(&blobs).await;

        // A long grace period: orphans are marked, never deleted.
        let mut patient = Sweeper::new(Duration::from_secs(3600));
        for _ in 0..3 {
            assert_eq!(patient.sweep(&blobs, &in_use).await.unwrap(), 0);
        }
        assert_eq!(patient.candidates.len(), orphans.len());
        assert_eq!(keys(&blobs).await, all);

        // No grace period: still two passes, the first only marks.
        let mut sweeper = Sweeper::new(Duration::ZERO);
        assert_eq!(sweeper.sweep(&blobs, &in_use).await.unwrap(), 0);
        assert_eq!(keys(&blobs).await, all);
        // An orphan that is in use again by the next pass stays, and is unmarked.
        in_use.packages.insert("p-gone".into());
        assert_eq!(sweeper.sweep(&blobs, &in_use).await.unwrap(), 3);
        assert!(!sweeper.candidates.contains_key("packages/p-gone.zip"));
        let mut expected: Vec<String> = needed.iter().map(Key::to_string).collect();
        expected.push(blobs.package_key("p-gone").to_string());
        expected.sort();
        assert_eq!(keys(&blobs).await, expected);
    }

    #[tokio::test]
    async fn blobs_written_within_the_grace_period_stay() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobstore::open(dir.path(), None).await.unwrap();
        put(&blobs, &blobs.package_key("p-new")).await;
        // Seen as an orphan long enough, but written moments ago.
        let mut sweeper = Sweeper::new(Duration::from_secs(60));
        sweeper.candidates.insert(
            "packages/p-new.zip".into(),
            Instant::now() - Duration::from_secs(120),
        );
        assert_eq!(sweeper.sweep(&blobs, &InUse::default()).await.unwrap(), 0);
        assert_eq!(keys(&blobs).await, ["packages/p-new.zip"]);
    }
}
