//! Per-instance limits on app logs. The lines an instance writes (already cut at 64 KiB
//! by the executor) are held to a rate, a token bucket in bytes with a cost per line,
//! and pass through a bounded channel to a forwarder task that hands them to the log
//! sinks. What does not fit is dropped and counted, and the forwarder says so in the
//! app's log ("N log lines dropped ..."), so a flooding app costs the cell bounded
//! memory and a bounded share of the log pipeline, and its developer sees why lines
//! are missing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::executor::LineSink;

/// How often the forwarder reports drops while they happen.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait for the forwarder to pass on what is buffered when an instance ends.
const FINISH_TIMEOUT: Duration = Duration::from_secs(2);

/// The cell's app log lines, over every instance: admitted and dropped (for `/metrics`).
#[derive(Debug, Default)]
pub struct LogCounters {
    pub admitted: AtomicU64,
    pub dropped: AtomicU64,
}

/// The log budget of one instance (stdout and stderr together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Sustained rate, in bytes per second (each line also costs `line_cost`).
    /// Default 1 MiB/s, some 4,000 short lines a second.
    pub bytes_per_second: u64,
    /// What may be logged at once above the rate. Default 4 MiB.
    pub burst_bytes: u64,
    /// The fixed cost of a line (envelope and bookkeeping). Default 256 bytes.
    pub line_cost: u64,
    /// Lines buffered between the instance and the log sinks. Default 1,024.
    pub buffered_lines: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            bytes_per_second: 1 << 20,
            burst_bytes: 4 << 20,
            line_cost: 256,
            buffered_lines: 1_024,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Stream {
    Out,
    Err,
}

/// The limited sinks of one instance; give `stdout` and `stderr` to the instance and
/// [`LogForwarder::finish`] when it has ended.
pub struct LimitedLogs {
    pub stdout: LineSink,
    pub stderr: LineSink,
    pub forwarder: LogForwarder,
}

/// The task that passes admitted lines on; dropping it ends the task (after what is
/// buffered).
pub struct LogForwarder {
    done: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl LogForwarder {
    /// Passes on what is buffered, reports drops, and ends the forwarder.
    pub async fn finish(mut self) {
        self.done.cancel();
        if let Some(task) = self.task.take() {
            if tokio::time::timeout(FINISH_TIMEOUT, task).await.is_err() {
                tracing::warn!("the log forwarder of an instance did not finish in time");
            }
        }
    }
}

impl Drop for LogForwarder {
    fn drop(&mut self) {
        self.done.cancel();
    }
}

/// Puts `limits` between an instance and its log sinks. Drop notices go to `stderr`;
/// admitted and dropped lines are also counted in `counters`. Must be called within a
/// tokio runtime (it spawns the forwarder).
pub fn limit(
    stdout: LineSink,
    stderr: LineSink,
    limits: LogLimits,
    counters: Arc<LogCounters>,
) -> LimitedLogs {
    let (lines, received) = mpsc::channel(limits.buffered_lines.max(1));
    let admission = Arc::new(Admission {
        bucket: Mutex::new(TokenBucket::new(limits)),
        line_cost: limits.line_cost,
        dropped: AtomicU64::new(0),
        counters,
        lines,
    });
    let done = CancellationToken::new();
    let task = tokio::spawn(forward(
        received,
        stdout,
        stderr,
        admission.clone(),
        limits,
        done.clone(),
    ));
    let sink = |stream| -> LineSink {
        let admission = admission.clone();
        Arc::new(move |line: &[u8]| admission.offer(stream, line))
    };
    LimitedLogs {
        stdout: sink(Stream::Out),
        stderr: sink(Stream::Err),
        forwarder: LogForwarder {
            done,
            task: Some(task),
        },
    }
}

/// The instance's side: admits a line if the budget and the buffer allow.
struct Admission {
    bucket: Mutex<TokenBucket>,
    line_cost: u64,
    dropped: AtomicU64,
    counters: Arc<LogCounters>,
    lines: mpsc::Sender<(Stream, Bytes)>,
}

impl Admission {
    fn offer(&self, stream: Stream, line: &[u8]) {
        let cost = u64::try_from(line.len())
            .unwrap_or(u64::MAX)
            .saturating_add(self.line_cost);
        let within_budget = self
            .bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(cost);
        if !within_budget
            || self
                .lines
                .try_send((stream, Bytes::copy_from_slice(line)))
                .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.admitted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn forward(
    mut received: mpsc::Receiver<(Stream, Bytes)>,
    stdout: LineSink,
    stderr: LineSink,
    admission: Arc<Admission>,
    limits: LogLimits,
    done: CancellationToken,
) {
    let emit = |(stream, line): (Stream, Bytes)| match stream {
        Stream::Out => stdout(&line),
        Stream::Err => stderr(&line),
    };
    let report = || {
        let dropped = admission.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            // The count of what was lost, and CF's words for why.
            let notice = format!(
                "{dropped} log lines dropped: app instance exceeded log rate limit ({} bytes/sec)",
                limits.bytes_per_second
            );
            stderr(notice.as_bytes());
        }
    };
    let mut tick = tokio::time::interval(DROP_REPORT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            line = received.recv() => match line {
                Some(line) => emit(line),
                None => break,
            },
            _ = tick.tick() => report(),
            _ = done.cancelled() => {
                received.close();
                while let Ok(line) = received.try_recv() {
                    emit(line);
                }
                break;
            }
        }
    }
    report();
}

/// Tokens are bytes; they refill at the rate up to the burst.
struct TokenBucket {
    tokens: f64,
    capacity: f64,
    rate: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn new(limits: LogLimits) -> TokenBucket {
        let capacity = limits.burst_bytes.max(1) as f64;
        TokenBucket {
            tokens: capacity,
            capacity,
            rate: limits.bytes_per_second as f64,
            refilled: Instant::now(),
        }
    }

    fn take(&mut self, cost: u64) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.refilled = now;
        let cost = cost as f64;
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::tests::collecting;

    #[tokio::test]
    async fn lines_within_the_budget_all_arrive_in_order() {
        let (out, out_lines) = collecting();
        let (err, err_lines) = collecting();
        let logs = limit(out, err, LogLimits::default(), Default::default());
        for i in 0..100 {
            (logs.stdout)(format!("out {i}").as_bytes());
        }
        (logs.stderr)(b"oops");
        logs.forwarder.finish().await;
        let out_lines = out_lines.lock().unwrap();
        assert_eq!(out_lines.len(), 100);
        assert_eq!(out_lines[99], "out 99");
        assert_eq!(*err_lines.lock().unwrap(), ["oops"]);
    }

    #[tokio::test]
    async fn a_flood_is_cut_to_the_budget_and_the_drops_reported() {
        let (out, out_lines) = collecting();
        let (err, err_lines) = collecting();
        let limits = LogLimits {
            bytes_per_second: 1,
            burst_bytes: 100 * 266,
            line_cost: 256,
            buffered_lines: 1_000,
        };
        let logs = limit(out, err, limits, Default::default());
        for i in 0..100_000 {
            (logs.stdout)(format!("line {i:05}").as_bytes());
        }
        logs.forwarder.finish().await;
        let passed = out_lines.lock().unwrap().len();
        assert_eq!(passed, 100, "the burst passes, nothing more");
        let err_lines = err_lines.lock().unwrap();
        assert_eq!(
            *err_lines,
            ["99900 log lines dropped: app instance exceeded log rate limit (1 bytes/sec)"]
        );
    }

    #[tokio::test]
    async fn a_full_buffer_drops_rather_than_blocks() {
        let (out, out_lines) = collecting();
        let (err, err_lines) = collecting();
        let limits = LogLimits {
            buffered_lines: 10,
            ..LogLimits::default()
        };
        let logs = limit(out, err, limits, Default::default());
        // The forwarder cannot run while this single-threaded test holds the thread.
        for i in 0..1_000 {
            (logs.stdout)(format!("line {i}").as_bytes());
        }
        logs.forwarder.finish().await;
        assert_eq!(out_lines.lock().unwrap().len(), 10);
        assert!(err_lines.lock().unwrap()[0].starts_with("990 log lines dropped"));
    }

    #[test]
    fn the_bucket_refills_at_its_rate() {
        let mut bucket = TokenBucket::new(LogLimits {
            bytes_per_second: 1_000_000,
            burst_bytes: 1_000,
            ..LogLimits::default()
        });
        assert!(bucket.take(1_000));
        assert!(!bucket.take(500));
        std::thread::sleep(Duration::from_millis(5));
        assert!(bucket.take(500));
    }
}
