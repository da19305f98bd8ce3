//! Bounds shared by the configuration, rule files and rule tests, so `check` and `run`
//! accept exactly the same inputs.

use std::time::Duration;

/// The longest duration a rule, a rule test or the config may give (windows, `for`,
/// SLO windows, intervals): a year and a day. Longer ones are almost certainly typos, and
/// bounding them keeps every sum of durations and times far from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);
/// [`MAX_DURATION`] as written in error messages.
pub const MAX_DURATION_TEXT: &str = "366d";
