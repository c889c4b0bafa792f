//! Lock-free statistics: event counters and log-linear latency histograms.
//!
//! A histogram keeps 8 sub-buckets per power of two of nanoseconds, so a reported percentile is
//! within 12.5% of the true value, for a fixed 4 KiB per histogram and one relaxed atomic add per
//! sample: cheap enough to record on every job.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// A concurrent histogram of durations.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
}

/// Percentiles of a [`Histogram`], in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

fn bucket_of(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let exp = ns.ilog2(); // >= SUB_BITS
    let sub = (ns >> (exp - SUB_BITS)) as usize & (SUB - 1);
    (exp - SUB_BITS + 1) as usize * SUB + sub
}

/// The largest value that falls into `bucket`: percentiles never under-report.
fn upper_bound(bucket: usize) -> u64 {
    if bucket < SUB {
        return bucket as u64;
    }
    let exp = (bucket / SUB) as u32 + SUB_BITS - 1;
    let sub = (bucket % SUB) as u64;
    let base = (1u64 << exp) | (sub << (exp - SUB_BITS));
    base.saturating_add((1u64 << (exp - SUB_BITS)) - 1)
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Histogram {
    /// Records one sample.
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
    }

    /// Percentiles of everything recorded so far.
    #[must_use]
    #[allow(clippy::cast_precision_loss, clippy::cast_sign_loss)] // reason: ranks of u64 counts
    pub fn percentiles(&self) -> Percentiles {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return Percentiles::default();
        }
        let at = |q: f64| -> f64 {
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return upper_bound(i) as f64 / 1e9;
                }
            }
            unreachable!("rank <= total")
        };
        Percentiles {
            count: total,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bounds_contain_their_values() {
        let mut last = 0;
        for ns in (0..10_000u64).chain([1 << 20, (1 << 40) + 12345, u64::MAX]) {
            let b = bucket_of(ns);
            assert!(b >= last || ns > 10_000, "bucket order broke at {ns}");
            last = b;
            assert!(upper_bound(b) >= ns, "{ns} above its bucket's bound {}", upper_bound(b));
            assert!(b < BUCKETS);
            if b > 0 {
                assert!(upper_bound(b - 1) < ns, "{ns} belongs to an earlier bucket");
            }
        }
    }

    #[test]
    fn percentiles_are_within_one_bucket() {
        let h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let p = h.percentiles();
        assert_eq!(p.count, 1000);
        for (got, want) in [(p.p50, 500e-6), (p.p90, 900e-6), (p.p99, 990e-6), (p.max, 1000e-6)] {
            assert!(got >= want && got <= want * 1.13, "got {got}, want about {want}");
        }
    }
}
