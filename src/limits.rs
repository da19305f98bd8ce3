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
