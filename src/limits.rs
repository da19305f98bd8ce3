//! Bounds shared by the configuration, rule files and rule tests, so `check` and `run`
//! accept exactly the same inputs.

use std::time::Duration;

/// The longest duration a rule, a rule test or the config may give (windows, `for`,
/// SLO windows, intervals): a year and a day. Longer ones are almost certainly typos, and
/// bounding them keeps every sum of durations and times far from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);
/// [`MAX_DURATION`] as written in error messages.
pub const MAX_DURATION_TEXT: &str = "366d";

/// The deepest nesting of parentheses a rule condition may use. Parsing recurses once
/// per level, so this bounds the parser's stack (a condition 1,250 levels deep used to
/// overflow it).
pub const MAX_EXPR_DEPTH: usize = 64;
/// The most comparisons one rule condition may combine with `and` / `or`. Evaluation,
/// export and drop walk the condition tree recursively, and its depth is at most this.
pub const MAX_EXPR_TERMS: usize = 256;
/// The longest rule condition, in bytes.
pub const MAX_EXPR_BYTES: usize = 16 * 1024;

/// The largest value a duration key of the configuration accepts, by the key's name (its
/// last segment: `sample_interval` bounds the top-level and every source's value), as
/// the duration and as written in error messages. Every duration key has a bound, so a
/// typo such as `"300d"` is refused by `check` instead of leaving `run` waiting for ever
/// while it looks healthy. Keys not listed get [`MAX_DURATION`].
pub fn config_duration_max(key: &str) -> (Duration, &'static str) {
    const MIN: u64 = 60;
    const HOUR: u64 = 3600;
    match key {
        // A source sampled less often than hourly cannot guard an SLO.
        "sample_interval" | "backoff_max" => (Duration::from_secs(HOUR), "1h"),
        "sample_timeout" | "probe_timeout" => (Duration::from_secs(10 * MIN), "10m"),
        // Rules evaluated less often than hourly never catch anything in time.
        "evaluation_interval" => (Duration::from_secs(HOUR), "1h"),
        "unknown_after" | "resend_interval" => (Duration::from_secs(24 * HOUR), "1d"),
        "timeout" => (Duration::from_secs(5 * MIN), "5m"),
        _ => (MAX_DURATION, MAX_DURATION_TEXT),
    }
}

/// The largest value a positive-integer key of the configuration accepts, by name.
/// Bounds what one setting can make the agent allocate or keep in flight.
pub fn config_count_max(key: &str) -> usize {
    match key {
        "offset_fetch_concurrency" => 1024,
        "probe_budget" => 100_000,
        "max_points" => 1_000_000,
        "queue_capacity" => 1_000_000,
        _ => 1_000_000,
    }
}
