//! SLOs: service level indicators, error budgets and multi-window multi-burn-rate alerts.
//! Pure: ticks and their outcomes go in, ratios come out.
//!
//! - A **time-slice** SLI counts evaluation intervals: an interval is good when the
//!   condition holds for every series, bad when it fails for one; an interval whose data
//!   is unknown counts neither way (unknown is never good or bad).
//! - A **ratio** SLI counts events: `bad` and `total` are rates (per second), so one
//!   interval adds `rate × interval` events to each.
//!
//! Events are kept in one-minute buckets over the SLO window (plus the longest alert
//! window), so memory per SLO is bounded (28 d ≈ 40,000 buckets) and a restart restores
//! the budget from the state file (see `state.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::expr::{Cond, ValueExpr};

/// An indicator.
#[derive(Debug, Clone)]
pub enum Sli {
    TimeSlice { cond: Cond, text: String },
    Ratio { bad: ValueExpr, bad_text: String, total: ValueExpr, total_text: String },
}

/// One row of the burn-rate alert table: fire when the burn rate over both windows is
/// above `factor`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BurnAlert {
    pub severity: String,
    pub factor: f64,
    #[serde(with = "humantime_serde_secs")]
    pub long: Duration,
    #[serde(with = "humantime_serde_secs")]
    pub short: Duration,
}

mod humantime_serde_secs {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

const fn h(hours: u64) -> Duration {
    Duration::from_secs(hours * 3600)
}

/// One row of the standard table: alert when `budget` (a fraction of the whole window's
/// error budget) would be spent within `long`, confirmed over `short`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StandardRow {
    pub severity: &'static str,
    pub budget: f64,
    pub long: Duration,
    pub short: Duration,
}

/// The standard rows (Google SRE workbook, "Alerting on SLOs", table 5-8; Sloth's
/// `google-30d`/`google-28d` windows): page on 2 % of the budget in 1h (confirmed over
/// 5m) and on 5 % in 6h (30m); ticket on 10 % in 1d (2h) and 10 % in 3d (6h).
pub const STANDARD_ROWS: [StandardRow; 4] = [
    StandardRow { severity: "page", budget: 0.02, long: h(1), short: Duration::from_secs(300) },
    StandardRow { severity: "page", budget: 0.05, long: h(6), short: Duration::from_secs(1800) },
    StandardRow { severity: "ticket", budget: 0.10, long: h(24), short: h(2) },
    StandardRow { severity: "ticket", budget: 0.10, long: h(72), short: h(6) },
];

/// The burn-rate factor at which `budget` of a `window`'s error budget is spent in
/// `long`: budget × window ÷ long (as Sloth derives it). 14.4 for 2 % in 1h of 30 days,
/// 13.44 for 28 days, 3.36 for 7 days.
pub fn factor(budget: f64, window: Duration, long: Duration) -> f64 {
    budget * window.as_secs_f64() / long.as_secs_f64()
}

/// The default alert table for an SLO over `window`: the standard rows with their
/// factors derived from the window. (The 14.4/6/3/1 often quoted are the 30-day values.)
pub fn default_burn_alerts(window: Duration) -> Vec<BurnAlert> {
    STANDARD_ROWS
        .iter()
        .map(|r| BurnAlert { severity: r.severity.to_string(), factor: factor(r.budget, window, r.long), long: r.long, short: r.short })
        .collect()
}

/// Severity of a row.
pub fn severity(a: &BurnAlert) -> &str {
    &a.severity
}

/// A validated SLO.
#[derive(Debug, Clone)]
pub struct SloSpec {
    pub file: PathBuf,
    pub name: String,
    /// Target fraction of good, in (0, 1).
    pub objective: f64,
    pub window: Duration,
    pub sli: Sli,
    pub alerts: Vec<BurnAlert>,
    /// Added to its burn-rate alerts (metrics, export); shown in the API.
    pub labels: BTreeMap<String, String>,
    /// Added to its exported burn-rate alerts; shown in the API.
    pub annotations: BTreeMap<String, String>,
    pub runbooks: Vec<String>,
}

/// Widest bucket.
pub const BUCKET: Duration = Duration::from_secs(60);

impl SloSpec {
    /// Bucket width: a fifth of the shortest alert window, between 1 s and 1 minute, so
    /// a 5-minute window still has 5 buckets and a 28-day SLO at most 40,320.
    pub fn bucket(&self) -> Duration {
        let shortest = self.alerts.iter().map(|a| a.short).min().unwrap_or(self.window);
        (shortest / 5).clamp(Duration::from_secs(1), BUCKET)
    }
}

fn default_width() -> u64 {
    BUCKET.as_secs()
}

/// Good and total events per bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Events {
    /// Bucket width in seconds.
    #[serde(default = "default_width")]
    pub width: u64,
    /// Bucket start (unix seconds) → (good, total).
    pub buckets: BTreeMap<u64, (f64, f64)>,
}

impl Default for Events {
    fn default() -> Self {
        Events::with_width(BUCKET)
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Events {
    pub fn with_width(width: Duration) -> Self {
        Events { width: width.as_secs().max(1), buckets: BTreeMap::new() }
    }

    /// Adds events at `at`.
    pub fn add(&mut self, at: SystemTime, good: f64, total: f64) {
        let w = self.width.max(1);
        let key = unix(at) / w * w;
        let e = self.buckets.entry(key).or_insert((0.0, 0.0));
        e.0 += good;
        e.1 += total;
    }

    /// Drops buckets older than `keep` before `now`.
    pub fn trim(&mut self, now: SystemTime, keep: Duration) {
        let horizon = unix(now).saturating_sub(keep.as_secs());
        let w = self.width.max(1);
        self.buckets.retain(|k, _| *k + w > horizon);
    }

    /// (good, total) over the last `window` (whole buckets overlapping it).
    pub fn sum(&self, now: SystemTime, window: Duration) -> (f64, f64) {
        let w = self.width.max(1);
        let from = unix(now).saturating_sub(window.as_secs());
        self.buckets.range(from / w * w..).fold((0.0, 0.0), |a, (_, v)| (a.0 + v.0, a.1 + v.1))
    }

    /// Fraction of bad events over the window; `None` without events.
    pub fn error_ratio(&self, now: SystemTime, window: Duration) -> Option<f64> {
        let (good, total) = self.sum(now, window);
        (total > 0.0).then(|| ((total - good) / total).clamp(0.0, 1.0))
    }
}

/// Burn rate: how many times faster than allowed the budget is being spent.
pub fn burn_rate(error_ratio: f64, objective: f64) -> f64 {
    error_ratio / (1.0 - objective)
}

/// Fraction of the window's error budget left (negative when overspent).
pub fn budget_remaining(error_ratio: f64, objective: f64) -> f64 {
    1.0 - error_ratio / (1.0 - objective)
}

/// The status of one SLO at one time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloStatus {
    pub name: String,
    pub objective: f64,
    pub window_seconds: f64,
    /// Fraction of good events (or slices) over the SLO window.
    pub sli: Option<f64>,
    pub budget_remaining: Option<f64>,
    /// Burn rate per window (every window of the alert table).
    pub burn_rates: BTreeMap<String, Option<f64>>,
    pub alerts: Vec<BurnAlertStatus>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub runbooks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BurnAlertStatus {
    pub severity: String,
    pub factor: f64,
    pub long: String,
    pub short: String,
    pub long_burn: Option<f64>,
    pub short_burn: Option<f64>,
    /// Both windows burn faster than `factor`.
    pub firing: bool,
}

/// Computes an SLO's status from its events. Pure.
pub fn status(spec: &SloSpec, events: &Events, now: SystemTime) -> SloStatus {
    let er = |w: Duration| events.error_ratio(now, w);
    let mut burn_rates = BTreeMap::new();
    let mut alerts = Vec::new();
    for a in &spec.alerts {
        let (lb, sb) = (er(a.long).map(|e| burn_rate(e, spec.objective)), er(a.short).map(|e| burn_rate(e, spec.objective)));
        let (ln, sn) = (humantime::format_duration(a.long).to_string(), humantime::format_duration(a.short).to_string());
        burn_rates.insert(ln.clone(), lb);
        burn_rates.insert(sn.clone(), sb);
        alerts.push(BurnAlertStatus {
            severity: severity(a).to_string(),
            factor: a.factor,
            firing: matches!((lb, sb), (Some(l), Some(s)) if l > a.factor && s > a.factor),
            long: ln,
            short: sn,
            long_burn: lb,
            short_burn: sb,
        });
    }
    let window_er = er(spec.window);
    SloStatus {
        name: spec.name.clone(),
        objective: spec.objective,
        window_seconds: spec.window.as_secs_f64(),
        sli: window_er.map(|e| 1.0 - e),
        budget_remaining: window_er.map(|e| budget_remaining(e, spec.objective)),
        burn_rates,
        alerts,
        labels: spec.labels.clone(),
        annotations: spec.annotations.clone(),
        runbooks: spec.runbooks.clone(),
    }
}

/// How long events must be kept for `spec`.
pub fn retention(spec: &SloSpec) -> Duration {
    spec.alerts.iter().map(|a| a.long).chain([spec.window]).max().unwrap_or(spec.window) + BUCKET
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(min: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 / 60 * 60 + min * 60)
    }

    fn spec(objective: f64, window: Duration) -> SloSpec {
        SloSpec {
            file: PathBuf::new(),
            name: "s".into(),
            objective,
            window,
            sli: Sli::TimeSlice { cond: super::super::expr::parse("x > 1").unwrap(), text: String::new() },
            alerts: default_burn_alerts(window),
            labels: BTreeMap::from([("team".into(), "payments".into())]),
            annotations: BTreeMap::from([("summary".into(), "payments are late".into())]),
            runbooks: vec!["scale-payments-consumers".into()],
        }
    }

    #[test]
    fn budget_math_matches_hand_computed_values() {
        // 99.5% over 1000 minutes allows 5 bad minutes. 2 bad minutes spend 40% of it.
        let mut e = Events::default();
        for m in 0..1000 {
            e.add(t(m), if m % 500 == 7 { 0.0 } else { 60.0 }, 60.0);
        }
        let s = status(&spec(0.995, Duration::from_secs(1000 * 60)), &e, t(999));
        assert!((s.sli.unwrap() - 0.998).abs() < 1e-12);
        assert!((s.budget_remaining.unwrap() - 0.6).abs() < 1e-9, "{s:?}");
        assert!((burn_rate(0.002, 0.995) - 0.4).abs() < 1e-9);
    }

    #[test]
    fn multiwindow_alert_needs_both_windows_burning() {
        // 99% objective; the last 10 minutes all bad, the hour before all good.
        let mut e = Events::default();
        for m in 0..70 {
            let bad = m >= 60;
            e.add(t(m), if bad { 0.0 } else { 60.0 }, 60.0);
        }
        let s = status(&spec(0.99, Duration::from_secs(28 * 86400)), &e, t(69));
        let page = &s.alerts[0];
        // 5 m window: all bad → burn 100; 1 h window: 10 of 61 bad ≈ 0.164 → burn ≈ 16.4.
        assert!(page.short_burn.unwrap() > 14.4 && page.long_burn.unwrap() > 14.4, "{page:?}");
        assert!(page.firing);
        assert_eq!(page.severity, "page");
        // 6 h / 30 m: 30 m burn ≈ 10/31/0.01 ≈ 32; 6 h burn ≈ 10/70/0.01 ≈ 14.3 > 6 → fires too.
        assert!(s.alerts[1].firing);
        // Once good again, the short window clears first and the page stops.
        for m in 70..80 {
            e.add(t(m), 60.0, 60.0);
        }
        let s = status(&spec(0.99, Duration::from_secs(28 * 86400)), &e, t(79));
        assert!(!s.alerts[0].firing, "{:?}", s.alerts[0]);
    }

    #[test]
    fn a_status_carries_the_slo_labels_annotations_and_runbooks() {
        let s = status(&spec(0.99, Duration::from_secs(3600)), &Events::default(), t(0));
        assert_eq!(s.labels["team"], "payments");
        assert_eq!(s.annotations["summary"], "payments are late");
        assert_eq!(s.runbooks, ["scale-payments-consumers"]);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["labels"]["team"], "payments", "{json}");
    }

    #[test]
    fn no_events_means_unknown_not_a_full_budget() {
        let s = status(&spec(0.99, Duration::from_secs(3600)), &Events::default(), t(0));
        assert_eq!(s.sli, None);
        assert_eq!(s.budget_remaining, None);
        assert!(s.alerts.iter().all(|a| !a.firing && a.long_burn.is_none()));
    }

    #[test]
    fn default_burn_rate_factors_are_derived_from_the_slo_window() {
        let factors = |days: u64| -> Vec<f64> {
            default_burn_alerts(Duration::from_secs(days * 86_400)).iter().map(|a| (a.factor * 1e4).round() / 1e4).collect()
        };
        // budget × window ÷ long: 0.02 × 720h / 1h = 14.4, 0.05 × 720h / 6h = 6, …
        assert_eq!(factors(30), vec![14.4, 6.0, 3.0, 1.0]);
        // 0.02 × 672h / 1h = 13.44, 0.05 × 672h / 6h = 5.6, 0.1 × 28 = 2.8, 0.1 × 28 / 3.
        assert_eq!(factors(28), vec![13.44, 5.6, 2.8, 0.9333]);
        // 0.02 × 168h / 1h = 3.36, 0.05 × 168h / 6h = 1.4, 0.1 × 7 = 0.7, 0.1 × 7 / 3.
        assert_eq!(factors(7), vec![3.36, 1.4, 0.7, 0.2333]);
        let sev: Vec<String> = default_burn_alerts(Duration::from_secs(7 * 86_400)).into_iter().map(|a| a.severity).collect();
        assert_eq!(sev, ["page", "page", "ticket", "ticket"], "severity does not depend on the factor");
    }

    #[test]
    fn a_default_page_row_spends_two_percent_of_the_budget_whatever_the_window() {
        // Burning at exactly the factor for the whole long window spends `budget` of the
        // window's error budget: factor × long ÷ window.
        for days in [7, 28, 30, 90] {
            let window = Duration::from_secs(days * 86_400);
            for (a, row) in default_burn_alerts(window).iter().zip(STANDARD_ROWS) {
                let spent = a.factor * a.long.as_secs_f64() / window.as_secs_f64();
                assert!((spent - row.budget).abs() < 1e-12, "{days}d {a:?}: {spent}");
            }
        }
    }

    #[test]
    fn trim_bounds_the_buckets() {
        let mut e = Events::default();
        for m in 0..100 {
            e.add(t(m), 1.0, 1.0);
        }
        e.trim(t(99), Duration::from_secs(10 * 60));
        assert_eq!(e.buckets.len(), 11, "the 10 minutes before t(99) overlap buckets 89..=99");
    }
}
