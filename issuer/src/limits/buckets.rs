//! Token buckets by key (a client address, a user) that hold a bounded number of keys,
//! whatever a flood of distinct keys does.
//!
//! governor's keyed limiter keeps one state per key it has seen. Here the keys are
//! counted, and idle ones are dropped (`retain_recent`) when a new key arrives and the
//! last sweep is [`SWEEP_EVERY`] ago — [`SWEEP_WHEN_FULL`] when the set is full, so a
//! sweep costs (a few ms over [`MAX_KEYS`]) at most 10 times a second. A new key that
//! still finds [`MAX_KEYS`] busy keys is refused
//! ([`Refusal::Full`]) rather than let in: known keys keep their buckets, and an attacker
//! spraying addresses cannot evict the buckets of the clients it is already limited
//! under. Busy keys empty out fast — a key is droppable once its bucket is full again,
//! one emission interval (50 ms at 20/s) after a single apply — so the refusal lasts
//! only while the flood does.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firstcome_contract::Bucket;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::{Quota, RateLimiter};

/// Most keys one set of buckets holds: about 100 bytes each (an address or a user id of
/// typical length, its state and the map's overhead), so ~10 MB per set at most.
pub const MAX_KEYS: usize = 100_000;
/// Longest time idle keys stay counted against [`MAX_KEYS`], and how long a refused new
/// key should wait.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Shortest time between sweeps of a full set.
pub const SWEEP_WHEN_FULL: Duration = Duration::from_millis(100);

/// Why a key may not go on now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its bucket is empty.
    Limited { retry_after: Duration },
    /// The key is new and every one of the [`MAX_KEYS`] places is busy.
    Full,
}

impl Refusal {
    pub fn retry_after(self) -> Duration {
        match self {
            Self::Limited { retry_after } => retry_after,
            Self::Full => SWEEP_EVERY,
        }
    }
}

/// One token bucket per key, all with the same quota.
pub struct Buckets<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    limiter: RateLimiter<K, SharedKeys<K>, C, NoOpMiddleware<C::Instant>>,
    /// The limiter's own map, to ask whether a key is new.
    keys: Arc<DashMapStateStore<K>>,
    max_keys: usize,
    /// Keys in the map: exact after a sweep, an upper bound between sweeps (up to the
    /// applies in flight during a sweep may be missed).
    counted: AtomicUsize,
    last_sweep: Mutex<C::Instant>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new(bucket: Bucket) -> Self {
        Self::with_clock(bucket, MAX_KEYS, DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock> Buckets<K, C> {
    pub fn with_clock(bucket: Bucket, max_keys: usize, clock: C) -> Self {
        let keys = Arc::new(DashMapStateStore::default());
        let last_sweep = Mutex::new(clock.now());
        Self {
            limiter: RateLimiter::new(quota(bucket), SharedKeys(Arc::clone(&keys)), clock),
            keys,
            max_keys,
            counted: AtomicUsize::new(0),
            last_sweep,
        }
    }

    /// Takes a token from `key`'s bucket. Costs two lookups in a sharded map for a known
    /// key; a new key also reads the clock, and now and then sweeps.
    pub fn check(&self, key: &K) -> Result<(), Refusal> {
        if !self.keys.contains_key(key) {
            self.make_room()?;
        }
        self.limiter.check_key(key).map_err(|not_until| {
            let now = self.limiter.clock().now();
            Refusal::Limited {
                retry_after: not_until.wait_time_from(now),
            }
        })
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn make_room(&self) -> Result<(), Refusal> {
        self.sweep_if_due(self.counted.load(Ordering::Relaxed) >= self.max_keys);
        if self.counted.fetch_add(1, Ordering::Relaxed) < self.max_keys {
            return Ok(());
        }
        self.counted.fetch_sub(1, Ordering::Relaxed);
        Err(Refusal::Full)
    }

    /// Drops idle keys if the last sweep is long enough ago; one caller at a time.
    fn sweep_if_due(&self, full: bool) {
        let Ok(mut last) = self.last_sweep.try_lock() else {
            return;
        };
        let gap = if full { SWEEP_WHEN_FULL } else { SWEEP_EVERY };
        let now = self.limiter.clock().now();
        if now < *last + Nanos::from(gap) {
            return;
        }
        *last = now;
        self.limiter.retain_recent();
        self.keys.shrink_to_fit();
        self.counted.store(self.keys.len(), Ordering::Relaxed);
    }
}

fn quota(bucket: Bucket) -> Quota {
    // A validated configuration has no zero; were one to slip through, 1 is the safe side.
    let nonzero = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(nonzero(bucket.per_second)).allow_burst(nonzero(bucket.burst))
}

/// governor's own DashMap store, shared so that [`Buckets`] can see which keys it holds.
struct SharedKeys<K: Hash + Eq + Clone>(Arc<DashMapStateStore<K>>);

impl<K: Hash + Eq + Clone> StateStore for SharedKeys<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for SharedKeys<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&*self.0, drop_below);
    }

    fn shrink_to_fit(&self) {
        self.0.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr};

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn bucket(per_second: u32, burst: u32) -> Bucket {
        Bucket { per_second, burst }
    }

    #[test]
    fn a_burst_then_the_refill_rate() {
        let clock = FakeRelativeClock::default();
        let buckets = Buckets::with_clock(bucket(2, 3), 10, clock.clone());
        for _ in 0..3 {
            assert_eq!(buckets.check(&"a"), Ok(()));
        }
        let Err(Refusal::Limited { retry_after }) = buckets.check(&"a") else {
            panic!("the fourth apply at once is over the burst");
        };
        assert_eq!(
            retry_after,
            Duration::from_millis(500),
            "one token per 1/2 s"
        );
        assert_eq!(
            buckets.check(&"b"),
            Ok(()),
            "another key has its own bucket"
        );
        clock.advance(Duration::from_millis(500));
        assert_eq!(buckets.check(&"a"), Ok(()));
        assert!(buckets.check(&"a").is_err());
    }

    #[test]
    fn idle_keys_are_swept_every_interval() {
        let clock = FakeRelativeClock::default();
        let buckets = Buckets::with_clock(bucket(10, 1), 100, clock.clone());
        assert_eq!(buckets.check(&1), Ok(()));
        clock.advance(SWEEP_EVERY / 2);
        assert_eq!(buckets.check(&2), Ok(()));
        assert_eq!(buckets.len(), 2, "not swept before the interval");
        clock.advance(SWEEP_EVERY / 2);
        assert_eq!(buckets.check(&3), Ok(()));
        assert_eq!(buckets.len(), 1, "1 and 2 were idle: only 3 is left");
    }

    #[test]
    fn a_million_distinct_addresses_stay_under_the_cap() {
        let clock = FakeRelativeClock::default();
        let buckets = Buckets::with_clock(bucket(20, 40), MAX_KEYS, clock.clone());
        let address = |n: u128| IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | n << 64));
        let known = address(0);
        assert_eq!(buckets.check(&known), Ok(()));
        let mut full = 0;
        for n in 1..1_000_000 {
            if buckets.check(&address(n)) == Err(Refusal::Full) {
                full += 1;
            }
            if n % 10_000 == 0 {
                assert!(buckets.len() <= MAX_KEYS, "{} keys", buckets.len());
            }
        }
        assert_eq!(buckets.len(), MAX_KEYS);
        assert_eq!(
            full,
            1_000_000 - MAX_KEYS,
            "every key past the cap is refused"
        );
        assert_eq!(
            buckets.check(&known),
            Ok(()),
            "known keys keep their bucket"
        );
        // Once the flood's keys are idle, the next new key sweeps them out.
        clock.advance(SWEEP_EVERY);
        assert_eq!(buckets.check(&address(2_000_000)), Ok(()));
        assert_eq!(buckets.len(), 1);
    }

    #[test]
    fn a_full_set_sweeps_sooner_but_not_on_every_new_key() {
        let clock = FakeRelativeClock::default();
        let buckets = Buckets::with_clock(bucket(10, 1), 2, clock.clone());
        assert_eq!(buckets.check(&1), Ok(()));
        assert_eq!(buckets.check(&2), Ok(()));
        assert_eq!(buckets.check(&3), Err(Refusal::Full));
        assert_eq!(Refusal::Full.retry_after(), SWEEP_EVERY);
        // 1 and 2 are idle from 200 ms on (a token is 100 ms); a full set sweeps
        // every 100 ms: at 150 ms it finds them busy, and not again before 250 ms.
        clock.advance(Duration::from_millis(150));
        assert_eq!(buckets.check(&3), Err(Refusal::Full));
        clock.advance(Duration::from_millis(60));
        assert_eq!(buckets.check(&3), Err(Refusal::Full), "swept 60 ms ago");
        clock.advance(Duration::from_millis(40));
        assert_eq!(buckets.check(&3), Ok(()));
        assert_eq!(buckets.len(), 1);
    }
}
