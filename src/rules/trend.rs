//! Trends: least-squares slope with a Student's t test, and the time until a trend
//! crosses a threshold. Pure.
//!
//! "Lag is rising" only when the slope is positive *and* significant: the one-sided
//! p-value of t = slope / SE(slope), with n − 2 degrees of freedom, is below
//! 1 − confidence. Fewer than 3 points give no fit (unknown).

use std::time::{Duration, SystemTime};

use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::window::Point;

/// A fitted line y = intercept + slope · (t − t0), t in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Units per second.
    pub slope: f64,
    /// Fitted value at `t0`.
    pub intercept: f64,
    pub t0: SystemTime,
    /// Standard error of the slope.
    pub stderr: f64,
    pub n: usize,
}

impl Fit {
    /// Is the slope different from 0 in its direction at `confidence` (one-sided)?
    pub fn significant(&self, confidence: f64) -> bool {
        if self.slope == 0.0 {
            return false;
        }
        if self.stderr == 0.0 {
            // A perfect line: no doubt about its direction.
            return true;
        }
        let Ok(dist) = StudentsT::new(0.0, 1.0, (self.n - 2) as f64) else { return false };
        let t = (self.slope / self.stderr).abs();
        1.0 - dist.cdf(t) < 1.0 - confidence
    }

    /// The fitted value at `at`.
    pub fn at(&self, at: SystemTime) -> f64 {
        self.intercept + self.slope * secs_between(self.t0, at)
    }
}

fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Least-squares fit; `None` with fewer than 3 points or no spread in time.
pub fn fit(points: &[Point]) -> Option<Fit> {
    let n = points.len();
    if n < 3 {
        return None;
    }
    let t0 = points[0].0;
    let xs: Vec<f64> = points.iter().map(|p| secs_between(t0, p.0)).collect();
    let mean_x = xs.iter().sum::<f64>() / n as f64;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n as f64;
    let sxx: f64 = xs.iter().map(|x| (x - mean_x).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = xs.iter().zip(points).map(|(x, p)| (x - mean_x) * (p.1 - mean_y)).sum();
    let slope = sxy / sxx;
    let intercept = mean_y - slope * mean_x;
    let sse: f64 = xs.iter().zip(points).map(|(x, p)| (p.1 - (intercept + slope * x)).powi(2)).sum();
    let stderr = (sse / (n - 2) as f64 / sxx).sqrt();
    Some(Fit { slope, intercept, t0, stderr, n })
}

/// Seconds from `now` until the trend of `points` rises to `threshold` (breaches are
/// upward: lag, age, error ratios): 0 if the fitted current value is already at or
/// above it, +∞ if the trend is not rising significantly. `None` without enough points.
pub fn time_to_breach(points: &[Point], threshold: f64, now: SystemTime, confidence: f64) -> Option<f64> {
    let f = fit(points)?;
    let current = f.at(now);
    if current >= threshold {
        return Some(0.0);
    }
    if f.slope <= 0.0 || !f.significant(confidence) {
        return Some(f64::INFINITY);
    }
    Some((threshold - current) / f.slope)
}

/// A duration from seconds, for display.
pub fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(1_000_000.0 + s)
    }

    fn line(slope: f64, noise: &[f64]) -> Vec<Point> {
        noise.iter().enumerate().map(|(i, n)| (t(i as f64 * 10.0), 100.0 + slope * i as f64 * 10.0 + n)).collect()
    }

    #[test]
    fn fit_recovers_a_known_line() {
        let f = fit(&line(2.0, &[0.0; 10])).unwrap();
        assert!((f.slope - 2.0).abs() < 1e-9);
        assert!((f.intercept - 100.0).abs() < 1e-9);
        assert!(f.significant(0.99));
    }

    #[test]
    fn noise_without_a_trend_is_not_significant() {
        let f = fit(&line(0.0, &[3.0, -2.0, 4.0, -5.0, 1.0, -1.0, 2.0, -3.0])).unwrap();
        assert!(!f.significant(0.95), "slope {} ± {}", f.slope, f.stderr);
    }

    #[test]
    fn a_small_trend_in_large_noise_needs_more_confidence_to_show() {
        // slope 0.1/s over 7 points with ±1.5 noise: t ≈ 3.01 with 5 degrees of freedom;
        // the one-sided critical values are 2.015 (95 %) and 4.032 (99.5 %).
        let f = fit(&line(0.1, &[1.5, -1.5, 1.5, -1.5, 1.5, -1.5, 1.5])).unwrap();
        assert!((f.slope / f.stderr - 3.0123).abs() < 1e-3);
        assert!(f.significant(0.95), "t = {}", f.slope / f.stderr);
        assert!(!f.significant(0.995), "t = {}", f.slope / f.stderr);
    }

    #[test]
    fn time_to_breach_on_synthetic_sequences() {
        // 100 + 2·t: at t=90 (now) the fit says 280; 300 is reached in 10 s.
        let pts = line(2.0, &[0.0; 10]);
        assert!((time_to_breach(&pts, 300.0, t(90.0), 0.95).unwrap() - 10.0).abs() < 1e-6);
        assert_eq!(time_to_breach(&pts, 250.0, t(90.0), 0.95), Some(0.0), "already past");
        let falling = line(-1.0, &[0.0; 10]);
        assert_eq!(time_to_breach(&falling, 300.0, t(90.0), 0.95), Some(f64::INFINITY), "heading away");
        let flat = line(0.0, &[1.0, -1.0, 1.0, -1.0, 1.0, -1.0]);
        assert_eq!(time_to_breach(&flat, 300.0, t(50.0), 0.95), Some(f64::INFINITY), "no significant trend");
        assert_eq!(time_to_breach(&pts[..2], 300.0, t(90.0), 0.95), None);
    }
}
