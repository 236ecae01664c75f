//! Latency samples of one operation and what the table shows of them:
//! ops/s, p50 and p99, and the median of each over several runs.

use std::time::Duration;

/// The samples of one operation in one run.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    /// One latency per operation, as the client saw it.
    pub latencies: Vec<Duration>,
    /// Wall time of the whole phase (for concurrent phases: first start to
    /// last end), which ops/s is measured against.
    pub wall: Duration,
}

impl Samples {
    pub fn summary(&self) -> Summary {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let wall = self.wall.as_secs_f64();
        Summary {
            count: sorted.len(),
            ops_per_sec: if wall > 0.0 { sorted.len() as f64 / wall } else { 0.0 },
            p50: percentile(&sorted, 0.50),
            p99: percentile(&sorted, 0.99),
        }
    }
}

/// What one table cell shows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub ops_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
}

impl Summary {
    /// The median of each figure over several runs (each figure on its own).
    pub fn median(runs: &[Summary]) -> Summary {
        if runs.is_empty() {
            return Summary::default();
        }
        let mid = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            let n = v.len();
            if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
        };
        let secs = |f: fn(&Summary) -> Duration| {
            Duration::from_secs_f64(mid(runs.iter().map(|s| f(s).as_secs_f64()).collect()))
        };
        Summary {
            count: runs[0].count,
            ops_per_sec: mid(runs.iter().map(|s| s.ops_per_sec).collect()),
            p50: secs(|s| s.p50),
            p99: secs(|s| s.p99),
        }
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_rate() {
        let latencies: Vec<_> = (1..=100).map(Duration::from_millis).collect();
        let s = Samples { latencies, wall: Duration::from_secs(2) }.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert!((s.ops_per_sec - 50.0).abs() < 1e-9);
    }

    #[test]
    fn median_takes_each_figure_on_its_own() {
        let run = |ops, p50| Summary {
            count: 3,
            ops_per_sec: ops,
            p50: Duration::from_millis(p50),
            p99: Duration::from_millis(p50 * 2),
        };
        let m = Summary::median(&[run(10.0, 5), run(30.0, 1), run(20.0, 9)]);
        assert_eq!(m.ops_per_sec, 20.0);
        assert_eq!(m.p50, Duration::from_millis(5));
        assert_eq!(m.p99, Duration::from_millis(10));
    }
}
