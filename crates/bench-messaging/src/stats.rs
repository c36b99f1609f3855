//! Latency percentiles (nearest rank), with requests that never finished counted as slower
//! than every finished one, and the little formatting the reports need.

use serde_json::{Value, json};
use std::fmt;
use std::time::Duration;

/// One percentile: a measured latency, or "more than" when it falls among the requests that
/// had not finished when the run was cut off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pct {
    Ms(f64),
    /// Unfinished: at least this long (the shortest wait of any unfinished request).
    AtLeastMs(f64),
}

impl Pct {
    pub fn json(self) -> Value {
        match self {
            Pct::Ms(ms) => json!(round3(ms)),
            Pct::AtLeastMs(ms) => json!(format!(">{}", round3(ms))),
        }
    }

    pub fn ms(self) -> f64 {
        match self {
            Pct::Ms(ms) | Pct::AtLeastMs(ms) => ms,
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Pct::Ms(_))
    }
}

impl fmt::Display for Pct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pct::Ms(ms) => write!(f, "{}", fmt_ms(*ms)),
            Pct::AtLeastMs(ms) => write!(f, "> {}", fmt_ms(*ms)),
        }
    }
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Finished requests.
    pub n: usize,
    /// Requests cut off unfinished (counted as slower than any finished one).
    pub unfinished: usize,
    pub p50: Pct,
    pub p99: Pct,
    pub p999: Pct,
    pub max: Pct,
    /// Of the finished ones.
    pub mean_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Latency {
    /// `unfinished_floor` is the shortest time any unfinished request had already waited.
    pub fn of(samples: &[Duration], unfinished: usize, unfinished_floor: Duration) -> Latency {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let total = sorted.len() + unfinished;
        let at = |p: f64| -> Pct {
            if total == 0 {
                return Pct::Ms(0.0);
            }
            let k = ((p * total as f64).ceil() as usize).clamp(1, total);
            if k <= sorted.len() {
                Pct::Ms(ms(sorted[k - 1]))
            } else {
                Pct::AtLeastMs(ms(unfinished_floor))
            }
        };
        let sum: Duration = sorted.iter().sum();
        Latency {
            n: sorted.len(),
            unfinished,
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
            mean_ms: if sorted.is_empty() {
                0.0
            } else {
                ms(sum) / sorted.len() as f64
            },
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "n": self.n,
            "unfinished": self.unfinished,
            "mean_ms": round3(self.mean_ms),
            "p50_ms": self.p50.json(),
            "p99_ms": self.p99.json(),
            "p999_ms": self.p999.json(),
            "max_ms": self.max.json(),
        })
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// 1234567 as "1,234,567".
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate, rounded to what a reader can use.
pub fn rate(x: f64) -> String {
    if x >= 100.0 {
        grouped(x.round() as u64)
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_requests_are_slower_than_every_finished_one() {
        let samples: Vec<Duration> = (1..=98).map(Duration::from_millis).collect();
        let l = Latency::of(&samples, 2, Duration::from_secs(3));
        assert_eq!(l.p50, Pct::Ms(50.0));
        assert_eq!(l.p99, Pct::AtLeastMs(3000.0));
        let done = Latency::of(&samples, 0, Duration::ZERO);
        assert_eq!(done.max, Pct::Ms(98.0));
        assert_eq!(grouped(1234567), "1,234,567");
    }
}
