//! Cheap time for the checks every event makes (is a cache stale, is the
//! process table due for pruning): the kernel's coarse monotonic clock,
//! read from the vDSO without the TSC, a few milliseconds of resolution.
//! An `Instant` per check was 5% of the agent's CPU under a storm.

use std::cell::Cell;
use std::marker::PhantomData;
use std::time::Duration;

thread_local! {
    /// A reading this thread holds for a burst of events ([`Held`]).
    static HELD: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// Time since boot (CLOCK_MONOTONIC_COARSE), ticking every few ms; while
/// this thread holds a reading ([`Held`]), that reading.
pub fn coarse() -> Duration {
    HELD.with(Cell::get).unwrap_or_else(read)
}

/// One reading of the coarse clock for the checks of a burst of events on
/// this thread, until dropped. The clock only ticks every few
/// milliseconds, and reading it a few times per event was 2–3% of the
/// agent's CPU under a storm; whoever holds it calls [`Held::refresh`]
/// every few hundred events, so that a long burst does not stop time.
pub struct Held(PhantomData<*const ()>);

/// Hold a reading for this thread until the [`Held`] is dropped.
pub fn hold() -> Held {
    HELD.with(|h| h.set(Some(read())));
    Held(PhantomData)
}

impl Held {
    /// Read the clock again.
    pub fn refresh(&self) {
        HELD.with(|h| h.set(Some(read())));
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.with(|h| h.set(None));
    }
}

fn read() -> Duration {
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
    fn a_held_reading_stands_until_refreshed_or_dropped() {
        use std::time::Duration;
        let held = super::hold();
        let a = super::coarse();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(super::coarse(), a, "held");
        // Other threads read the clock itself.
        let elsewhere = std::thread::spawn(super::coarse).join().unwrap();
        assert!(elsewhere >= a + Duration::from_millis(20));
        held.refresh();
        let b = super::coarse();
        assert!(b >= a + Duration::from_millis(20));
        drop(held);
        std::thread::sleep(Duration::from_millis(30));
        assert!(super::coarse() >= b + Duration::from_millis(20), "released");
    }

    #[test]
    fn the_coarse_clock_moves_forward() {
        let a = super::coarse();
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(super::since(a) >= std::time::Duration::from_millis(20));
    }
}
