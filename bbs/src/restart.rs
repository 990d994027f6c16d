//! CF's crash restart rule (Diego's `restart_calculator`): the first crashes restart at
//! once, later ones wait a backoff that doubles from 30 s up to 16 min, and an instance
//! that crashed 200 times is left CRASHED. An instance that ran 5 min starts counting again.

use std::time::Duration;

use crate::models::{ActualLrp, ActualLrpState};

/// Crashes restarted immediately.
pub const IMMEDIATE_RESTARTS: u32 = 3;
/// From this many crashes on, the instance is never restarted.
pub const MAX_RESTART_ATTEMPTS: u32 = 200;
/// An instance that ran this long before crashing has its crash count reset.
pub const CRASH_RESET_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The first backoff, doubled per crash.
pub const BASE_BACKOFF: Duration = Duration::from_secs(30);
/// The longest backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(16 * 60);
/// Doublings of [`BASE_BACKOFF`] before [`MAX_BACKOFF`] caps it (30 s * 2^5 = 16 min).
const MAX_BACKOFF_EXPONENT: u32 = 5;

/// The crash count of `lrp` once it crashes at `now_ns`.
pub fn next_crash_count(lrp: &ActualLrp, now_ns: i64) -> u32 {
    let ran_long = lrp.state == ActualLrpState::Running
        && now_ns.saturating_sub(lrp.since) > crate::duration_ns(CRASH_RESET_TIMEOUT);
    if ran_long {
        1
    } else {
        lrp.crash_count.saturating_add(1)
    }
}

/// How long after its crash an instance with `crash_count` crashes waits before it
/// restarts; `None` once it is never restarted.
pub fn restart_delay(crash_count: u32) -> Option<Duration> {
    if crash_count < IMMEDIATE_RESTARTS {
        Some(Duration::ZERO)
    } else if crash_count < MAX_RESTART_ATTEMPTS {
        let exponent = (crash_count - IMMEDIATE_RESTARTS).min(MAX_BACKOFF_EXPONENT);
        Some((BASE_BACKOFF * 2u32.pow(exponent)).min(MAX_BACKOFF))
    } else {
        None
    }
}

/// Whether an instance CRASHED at `since_ns` with `crash_count` crashes restarts at `now_ns`.
pub fn should_restart(crash_count: u32, since_ns: i64, now_ns: i64) -> bool {
    restart_delay(crash_count)
        .is_some_and(|delay| now_ns >= since_ns.saturating_add(crate::duration_ns(delay)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;

    #[test]
    fn first_crashes_restart_immediately() {
        for count in 0..IMMEDIATE_RESTARTS {
            assert!(should_restart(count, 100 * SEC, 100 * SEC));
        }
        assert!(!should_restart(3, 100 * SEC, 100 * SEC));
    }

    #[test]
    fn backoff_doubles_up_to_sixteen_minutes() {
        let delays: Vec<u64> = (3..10)
            .map(|c| restart_delay(c).unwrap().as_secs())
            .collect();
        assert_eq!(delays, vec![30, 60, 120, 240, 480, 960, 960]);
        assert!(should_restart(4, 0, 60 * SEC));
        assert!(!should_restart(4, 0, 59 * SEC));
    }

    #[test]
    fn never_restarts_after_two_hundred_crashes() {
        assert_eq!(restart_delay(MAX_RESTART_ATTEMPTS), None);
        assert!(!should_restart(MAX_RESTART_ATTEMPTS, 0, i64::MAX));
    }

    #[test]
    fn crash_count_resets_after_five_minutes_running() {
        let mut lrp = crate::lrp::unclaimed(crate::testing::key("pg", 0), 0);
        lrp.crash_count = 7;
        lrp.state = ActualLrpState::Running;
        assert_eq!(next_crash_count(&lrp, 299 * SEC), 8);
        assert_eq!(next_crash_count(&lrp, 301 * SEC), 1);
        lrp.state = ActualLrpState::Claimed;
        assert_eq!(next_crash_count(&lrp, 301 * SEC), 8);
    }
}
