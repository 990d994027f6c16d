//! Per-instance limits on app logs. The lines an instance writes (already cut at 64 KiB
//! by the executor) are held to a rate, a token bucket in bytes with a cost per line,
//! and pass through a buffer bounded in lines and bytes to a forwarder task that hands
//! them to the log sink in batches (what is waiting, up to [`MAX_BATCH_LINES`] and
//! [`MAX_BATCH_BYTES`]: one bus message each, not one a line). What does not fit is
//! dropped and counted, and the forwarder says so in the app's log ("N log lines
//! dropped ..."), so a flooding app costs the cell bounded memory and a bounded share
//! of the log pipeline, and its developer sees why lines are missing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wf_loggregator::LogType;

use crate::executor::LineSink;

/// Where the forwarder hands admitted lines, a batch at a time, in order.
pub type LogBatchSink = Arc<dyn Fn(&[(LogType, Bytes)]) + Send + Sync>;

/// Most lines in one batch.
pub const MAX_BATCH_LINES: usize = 512;
/// Most payload bytes in one batch (a batch of long lines is cut earlier), well under
/// NATS's 1 MB message limit once base64 and the envelopes' fields are added.
pub const MAX_BATCH_BYTES: usize = 256 << 10;
/// What a buffered line costs the buffer's byte bound besides its bytes.
const BUFFERED_LINE_OVERHEAD: u64 = 64;

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
    /// Lines buffered between the instance and the log sink. Default 4,096.
    pub buffered_lines: usize,
    /// Bytes buffered between the instance and the log sink (each line counts 64 bytes
    /// more than its own). Default 1 MiB.
    pub buffered_bytes: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            bytes_per_second: 1 << 20,
            burst_bytes: 4 << 20,
            line_cost: 256,
            buffered_lines: 4_096,
            buffered_bytes: 1 << 20,
        }
    }
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

/// Puts `limits` between an instance and `sink`. Drop notices go out as stderr lines;
/// admitted and dropped lines are also counted in `counters`. Must be called within a
/// tokio runtime (it spawns the forwarder).
pub fn limit(sink: LogBatchSink, limits: LogLimits, counters: Arc<LogCounters>) -> LimitedLogs {
    let (lines, received) = mpsc::channel(limits.buffered_lines.max(1));
    let admission = Arc::new(Admission {
        bucket: Mutex::new(TokenBucket::new(limits)),
        line_cost: limits.line_cost,
        dropped: AtomicU64::new(0),
        buffered_bytes: AtomicU64::new(0),
        max_buffered_bytes: limits.buffered_bytes.max(1),
        counters,
        lines,
    });
    let done = CancellationToken::new();
    let task = tokio::spawn(forward(
        received,
        sink,
        admission.clone(),
        limits,
        done.clone(),
    ));
    let line_sink = |log_type| -> LineSink {
        let admission = admission.clone();
        Arc::new(move |line: &[u8]| admission.offer(log_type, line))
    };
    LimitedLogs {
        stdout: line_sink(LogType::Out),
        stderr: line_sink(LogType::Err),
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
    /// Bytes in the buffer (see [`buffered_size`]), at most `max_buffered_bytes`.
    buffered_bytes: AtomicU64,
    max_buffered_bytes: u64,
    counters: Arc<LogCounters>,
    lines: mpsc::Sender<(LogType, Bytes)>,
}

/// What a line counts against the buffer's byte bound.
fn buffered_size(line: &[u8]) -> u64 {
    u64::try_from(line.len())
        .unwrap_or(u64::MAX)
        .saturating_add(BUFFERED_LINE_OVERHEAD)
}

impl Admission {
    fn offer(&self, log_type: LogType, line: &[u8]) {
        if self.admit(log_type, line) {
            self.counters.admitted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn admit(&self, log_type: LogType, line: &[u8]) -> bool {
        let cost = u64::try_from(line.len())
            .unwrap_or(u64::MAX)
            .saturating_add(self.line_cost);
        let within_budget = self
            .bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(cost);
        if !within_budget {
            return false;
        }
        let size = buffered_size(line);
        let before = self.buffered_bytes.fetch_add(size, Ordering::Relaxed);
        if before.saturating_add(size) > self.max_buffered_bytes
            || self
                .lines
                .try_send((log_type, Bytes::copy_from_slice(line)))
                .is_err()
        {
            self.buffered_bytes.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// Hands `lines` to `sink` in batches of at most [`MAX_BATCH_BYTES`] payload bytes
/// (a longer line goes alone), and frees their room in the buffer.
fn send_batches(sink: &LogBatchSink, admission: &Admission, lines: &mut Vec<(LogType, Bytes)>) {
    let mut start = 0;
    let mut bytes = 0;
    let mut freed = 0;
    for (i, (_, line)) in lines.iter().enumerate() {
        if i > start && bytes + line.len() > MAX_BATCH_BYTES {
            sink(&lines[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += line.len();
        freed += buffered_size(line);
    }
    if start < lines.len() {
        sink(&lines[start..]);
    }
    admission.buffered_bytes.fetch_sub(freed, Ordering::Relaxed);
    lines.clear();
}

async fn forward(
    mut received: mpsc::Receiver<(LogType, Bytes)>,
    sink: LogBatchSink,
    admission: Arc<Admission>,
    limits: LogLimits,
    done: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH_LINES);
    let report = || {
        let dropped = admission.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            // The count of what was lost, and CF's words for why.
            let notice = format!(
                "{dropped} log lines dropped: app instance exceeded log rate limit ({} bytes/sec)",
                limits.bytes_per_second
            );
            sink(&[(LogType::Err, Bytes::from(notice))]);
        }
    };
    let mut tick = tokio::time::interval(DROP_REPORT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received_lines = received.recv_many(&mut batch, MAX_BATCH_LINES) => {
                if received_lines == 0 {
                    break;
                }
                send_batches(&sink, &admission, &mut batch);
            }
            _ = tick.tick() => report(),
            _ = done.cancelled() => {
                received.close();
                while received.recv_many(&mut batch, MAX_BATCH_LINES).await > 0 {
                    send_batches(&sink, &admission, &mut batch);
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

    type Collected = Arc<Mutex<Vec<Vec<(LogType, String)>>>>;

    /// A batch sink that keeps every batch it is given.
    fn collecting() -> (LogBatchSink, Collected) {
        let batches: Collected = Default::default();
        let kept = batches.clone();
        let sink: LogBatchSink = Arc::new(move |lines: &[(LogType, Bytes)]| {
            let batch = lines
                .iter()
                .map(|(t, l)| (*t, String::from_utf8_lossy(l).into_owned()))
                .collect();
            kept.lock().unwrap().push(batch);
        });
        (sink, batches)
    }

    fn lines_of(batches: &Collected, log_type: LogType) -> Vec<String> {
        batches
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .filter(|(t, _)| *t == log_type)
            .map(|(_, l)| l.clone())
            .collect()
    }

    #[tokio::test]
    async fn lines_within_the_budget_all_arrive_in_order_in_batches() {
        let (sink, batches) = collecting();
        let logs = limit(sink, LogLimits::default(), Default::default());
        for i in 0..1_000 {
            (logs.stdout)(format!("out {i}").as_bytes());
        }
        (logs.stderr)(b"oops");
        logs.forwarder.finish().await;
        let out = lines_of(&batches, LogType::Out);
        assert_eq!(out.len(), 1_000);
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, l)| *l == format!("out {i}")));
        assert_eq!(lines_of(&batches, LogType::Err), ["oops"]);
        // The forwarder could not run while this single-threaded test wrote: it found
        // every line waiting and sent them in batches of at most MAX_BATCH_LINES.
        let sizes: Vec<usize> = batches.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, [512, 489]);
    }

    #[tokio::test]
    async fn long_lines_split_batches_by_bytes() {
        let (sink, batches) = collecting();
        let logs = limit(sink, LogLimits::default(), Default::default());
        let line = vec![b'x'; 60 << 10];
        for _ in 0..10 {
            (logs.stdout)(&line);
        }
        logs.forwarder.finish().await;
        let sizes: Vec<usize> = batches.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, [4, 4, 2], "at most 256 KiB of lines a batch");
    }

    #[tokio::test]
    async fn a_flood_is_cut_to_the_budget_and_the_drops_reported() {
        let (sink, batches) = collecting();
        let limits = LogLimits {
            bytes_per_second: 1,
            burst_bytes: 100 * 266,
            line_cost: 256,
            ..LogLimits::default()
        };
        let logs = limit(sink, limits, Default::default());
        for i in 0..100_000 {
            (logs.stdout)(format!("line {i:05}").as_bytes());
        }
        logs.forwarder.finish().await;
        assert_eq!(
            lines_of(&batches, LogType::Out).len(),
            100,
            "the burst passes, nothing more"
        );
        assert_eq!(
            lines_of(&batches, LogType::Err),
            ["99900 log lines dropped: app instance exceeded log rate limit (1 bytes/sec)"]
        );
    }

    #[tokio::test]
    async fn a_full_buffer_drops_rather_than_blocks() {
        let (sink, batches) = collecting();
        let limits = LogLimits {
            buffered_lines: 10,
            ..LogLimits::default()
        };
        let logs = limit(sink, limits, Default::default());
        // The forwarder cannot run while this single-threaded test holds the thread.
        for i in 0..1_000 {
            (logs.stdout)(format!("line {i}").as_bytes());
        }
        logs.forwarder.finish().await;
        assert_eq!(lines_of(&batches, LogType::Out).len(), 10);
        assert!(lines_of(&batches, LogType::Err)[0].starts_with("990 log lines dropped"));
    }

    #[tokio::test]
    async fn the_buffer_is_bounded_in_bytes_and_frees_what_was_sent() {
        let (sink, batches) = collecting();
        let counters = Arc::new(LogCounters::default());
        let limits = LogLimits {
            buffered_bytes: 10 * (1_000 + BUFFERED_LINE_OVERHEAD),
            ..LogLimits::default()
        };
        let logs = limit(sink, limits, counters.clone());
        let line = vec![b'y'; 1_000];
        for _ in 0..50 {
            (logs.stdout)(&line);
        }
        assert_eq!(counters.admitted.load(Ordering::Relaxed), 10);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 40);
        // Once the forwarder has sent them, their room is free again.
        while lines_of(&batches, LogType::Out).len() < 10 {
            tokio::task::yield_now().await;
        }
        (logs.stdout)(&line);
        assert_eq!(counters.admitted.load(Ordering::Relaxed), 11);
        logs.forwarder.finish().await;
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
