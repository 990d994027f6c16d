//! The agent's job supervisor (monit's part on a BOSH VM): runs each job's process in
//! its directory, restarts it when it dies with a growing backoff (reporting `failing`
//! meanwhile), drains and stops jobs on request.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::spec::{Drain, JobState, ProcessState};

/// How long a process must stay up to count as running.
pub const RUNNING_AFTER: Duration = Duration::from_secs(1);
/// The first restart delay; it doubles with each death in a row, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A process that stayed up this long starts its backoff over when it dies.
const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// How long a process gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// A job's process as the supervisor runs it.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub drain: Option<Drain>,
}

#[derive(Default)]
pub struct Supervisor {
    jobs: Mutex<BTreeMap<String, Supervised>>,
}

struct Supervised {
    job: Job,
    status: Arc<Mutex<Status>>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

#[derive(Debug, Clone)]
struct Status {
    state: JobState,
    restarts: u32,
    pid: Option<u32>,
    /// Set while draining: the process may exit, and is not restarted.
    draining: bool,
}

impl Supervisor {
    /// Starts supervising `jobs` that are not supervised yet.
    pub fn start(&self, jobs: Vec<Job>) {
        let mut supervised = self.jobs.lock().expect("supervisor lock");
        for job in jobs {
            if supervised.contains_key(&job.name) {
                continue;
            }
            let status = Arc::new(Mutex::new(Status {
                state: JobState::Starting,
                restarts: 0,
                pid: None,
                draining: false,
            }));
            let cancel = CancellationToken::new();
            let task = tokio::spawn(supervise(job.clone(), status.clone(), cancel.clone()));
            supervised.insert(
                job.name.clone(),
                Supervised {
                    job,
                    status,
                    cancel,
                    task,
                },
            );
        }
    }

    /// Stops every job (SIGTERM, then SIGKILL after a grace period) and forgets them.
    pub async fn stop(&self) {
        let jobs: Vec<Supervised> = {
            let mut supervised = self.jobs.lock().expect("supervisor lock");
            std::mem::take(&mut *supervised).into_values().collect()
        };
        for job in &jobs {
            job.cancel.cancel();
        }
        for job in jobs {
            let _ = job.task.await;
        }
    }

    /// Drains the jobs that declare a drain: POSTs their drain URL, then waits for
    /// their process to exit by itself (no restart meanwhile), up to their timeout.
    pub async fn drain(&self, http: &reqwest::Client) -> Result<(), String> {
        let draining: Vec<(Job, Arc<Mutex<Status>>)> = {
            let supervised = self.jobs.lock().expect("supervisor lock");
            supervised
                .values()
                .filter(|s| s.job.drain.is_some())
                .map(|s| (s.job.clone(), s.status.clone()))
                .collect()
        };
        for (job, status) in draining {
            let drain = job.drain.clone().expect("filtered");
            status.lock().expect("status lock").draining = true;
            let sent = http
                .post(&drain.post)
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .and_then(|r| r.error_for_status());
            if let Err(e) = sent {
                // A job that does not answer its drain call is stopped like any other.
                tracing::warn!(job = %job.name, error = %e, "drain call failed");
                continue;
            }
            let deadline = Instant::now() + Duration::from_secs(drain.timeout);
            while Instant::now() < deadline {
                if status.lock().expect("status lock").pid.is_none() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tracing::info!(job = %job.name, "drained");
        }
        Ok(())
    }

    /// The instance's job state and each process's.
    pub fn state(&self) -> (JobState, Vec<ProcessState>) {
        let supervised = self.jobs.lock().expect("supervisor lock");
        let processes: Vec<ProcessState> = supervised
            .values()
            .map(|s| {
                let status = s.status.lock().expect("status lock");
                ProcessState {
                    name: s.job.name.clone(),
                    state: status.state,
                    restarts: status.restarts,
                }
            })
            .collect();
        (summarize(processes.iter().map(|p| p.state)), processes)
    }
}

/// One job state for all of an instance's processes: failing if one fails, starting
/// if one starts, running if all run; stopped when there is nothing to run.
pub fn summarize(states: impl Iterator<Item = JobState>) -> JobState {
    let mut summary = None;
    for state in states {
        summary = Some(match (summary, state) {
            (_, JobState::Failing) | (Some(JobState::Failing), _) => JobState::Failing,
            (_, JobState::Starting) | (Some(JobState::Starting), _) => JobState::Starting,
            (_, JobState::Stopped) | (Some(JobState::Stopped), _) => JobState::Stopped,
            _ => JobState::Running,
        });
    }
    summary.unwrap_or(JobState::Stopped)
}

/// The restart delay after `deaths` deaths in a row.
pub fn backoff(deaths: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << deaths.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

async fn supervise(job: Job, status: Arc<Mutex<Status>>, cancel: CancellationToken) {
    let set = |change: &dyn Fn(&mut Status)| change(&mut status.lock().expect("status lock"));
    let mut deaths = 0u32;
    loop {
        let started = Instant::now();
        match spawn(&job) {
            Err(e) => tracing::warn!(job = %job.name, error = %e, "cannot start the job"),
            Ok(mut child) => {
                set(&|s| {
                    s.state = JobState::Starting;
                    s.pid = child.id();
                });
                let promote = tokio::time::sleep(RUNNING_AFTER);
                tokio::pin!(promote);
                let mut promoted = false;
                let exit = loop {
                    tokio::select! {
                        _ = cancel.cancelled() => {
                            terminate(&mut child).await;
                            set(&|s| { s.state = JobState::Stopped; s.pid = None; });
                            return;
                        }
                        exit = child.wait() => break exit,
                        _ = &mut promote, if !promoted => {
                            promoted = true;
                            set(&|s| s.state = JobState::Running);
                        }
                    }
                };
                tracing::warn!(job = %job.name, ?exit, "job exited");
                let drained = {
                    let mut s = status.lock().expect("status lock");
                    s.pid = None;
                    s.state = if s.draining {
                        JobState::Stopped
                    } else {
                        JobState::Failing
                    };
                    s.draining
                };
                if drained {
                    return;
                }
                if started.elapsed() > BACKOFF_RESET {
                    deaths = 0;
                }
            }
        }
        set(&|s| s.state = JobState::Failing);
        deaths += 1;
        tokio::select! {
            _ = cancel.cancelled() => {
                set(&|s| s.state = JobState::Stopped);
                return;
            }
            _ = tokio::time::sleep(backoff(deaths)) => {}
        }
        set(&|s| s.restarts += 1);
    }
}

fn spawn(job: &Job) -> std::io::Result<tokio::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&job.log)?;
    tokio::process::Command::new(&job.program)
        .args(&job.args)
        .envs(&job.env)
        .current_dir(&job.dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`].
async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_state_summary_and_backoff() {
        use JobState::*;
        assert_eq!(summarize([Running, Running].into_iter()), Running);
        assert_eq!(summarize([Running, Starting].into_iter()), Starting);
        assert_eq!(summarize([Starting, Failing, Running].into_iter()), Failing);
        assert_eq!(summarize([].into_iter()), Stopped);
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[tokio::test]
    async fn a_dying_job_is_restarted_and_reported_failing_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let job = |name: &str, script: &str| Job {
            name: name.into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: BTreeMap::new(),
            dir: dir.path().to_path_buf(),
            log: dir.path().join(format!("{name}.log")),
            drain: None,
        };
        let supervisor = Supervisor::default();
        supervisor.start(vec![
            job("steady", "exec sleep 60"),
            job("crashy", "echo started >> runs; exit 1"),
        ]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (state, processes) = supervisor.state();
            let crashy = processes.iter().find(|p| p.name == "crashy").unwrap();
            if crashy.restarts >= 2 {
                assert_eq!(state, JobState::Failing);
                break;
            }
            assert!(Instant::now() < deadline, "{processes:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let runs = std::fs::read_to_string(dir.path().join("runs")).unwrap();
        assert!(runs.lines().count() >= 2, "{runs}");
        supervisor.stop().await;
        assert_eq!(supervisor.state().0, JobState::Stopped);

        supervisor.start(vec![job("steady", "exec sleep 60")]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while supervisor.state().0 != JobState::Running {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        supervisor.stop().await;
    }

    /// A job that drains as a cell does: the POST starts it, and the process exits by
    /// itself when done; the supervisor waits for that and does not restart it.
    #[tokio::test]
    async fn drain_posts_and_waits_for_the_job_to_exit() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("evacuate");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/evacuate",
            axum::routing::post({
                let flag = flag.clone();
                move || async move {
                    std::fs::write(&flag, "").unwrap();
                    axum::http::StatusCode::ACCEPTED
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let supervisor = Supervisor::default();
        supervisor.start(vec![Job {
            name: "cell".into(),
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "while [ ! -f evacuate ]; do sleep 0.05; done; echo \"$WHAT\" > out".into(),
            ],
            env: BTreeMap::from([("WHAT".into(), "drained".into())]),
            dir: dir.path().to_path_buf(),
            log: dir.path().join("cell.log"),
            drain: Some(Drain {
                post: format!("http://{addr}/evacuate"),
                timeout: 10,
            }),
        }]);
        let started = Instant::now();
        supervisor.drain(&reqwest::Client::new()).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out")).unwrap(),
            "drained\n"
        );
        assert_eq!(supervisor.state().0, JobState::Stopped, "not restarted");
        supervisor.stop().await;
    }
}
