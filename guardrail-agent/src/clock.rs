//! Cheap time for the checks every event makes (is a cache stale, is the
//! process table due for pruning): the kernel's coarse monotonic clock,
//! read from the vDSO without the TSC, a few milliseconds of resolution.
//! An `Instant` per check was 5% of the agent's CPU under a storm.

use std::time::Duration;

/// Time since boot (CLOCK_MONOTONIC_COARSE), ticking every few ms.
pub fn coarse() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// How long since `then` (a [`coarse`] reading).
pub fn since(then: Duration) -> Duration {
    coarse().saturating_sub(then)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_coarse_clock_moves_forward() {
        let a = super::coarse();
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(super::since(a) >= std::time::Duration::from_millis(20));
    }
}
