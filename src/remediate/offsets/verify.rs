//! Whether the group's lag moved as the preview predicted (the procedure's last step).
//! Pure: the moves of the plan and what the log and the group show now come in as
//! values; a judgement comes out.
//!
//! The prediction, per moved partition: right after the commit the group's lag is
//! `log end at the plan − new offset`, plus what was produced since (the log end only
//! grows); once the consumers are resumed they consume from the new offset, so the
//! committed offset rises from it and the lag falls from there. It does not hold when:
//! - the committed offset is below the new one, or gone: the consumers resumed from
//!   somewhere else (an old in-memory position, a reset of their own) and overwrote the
//!   move;
//! - the log end moved back since the plan (the topic was truncated or recreated), or the
//!   log start passed the committed offset (retention deleted records before they were
//!   reprocessed);
//! - resumed consumers do not consume within the deadline (the caller turns a still
//!   pending judgement at its deadline into a failure).
//!
//! What offsets cannot show: a consumer that seeks to the log end by itself and commits
//! there looks like one that consumed everything quickly. The audit keeps the numbers
//! (predicted lag, lag now, records consumed) so a person can tell.

use std::collections::BTreeMap;

use super::compute::{tp_name, Move};
use crate::sample::kafka_admin::TopicPartition;

/// One partition now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// The group's committed offset (`None`: no commit).
    pub committed: Option<i64>,
    pub earliest: i64,
    pub latest: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// The prediction holds (with the numbers).
    Holds(String),
    /// Not yet: resumed consumers have not consumed from the new offset yet.
    Pending(String),
    /// The prediction does not hold; waiting will not change it.
    Fails(String),
}

/// Judges `moves` against `now`. `consuming`: consumers were resumed, so every partition
/// with records past its new offset must be consumed from it.
pub fn judge(moves: &[Move], now: &BTreeMap<TopicPartition, Observed>, consuming: bool) -> Judgement {
    let mut pending = Vec::new();
    let mut detail = Vec::new();
    for m in moves {
        let name = tp_name(&m.tp());
        let Some(o) = now.get(&m.tp()) else {
            pending.push(format!("{name}: not read"));
            continue;
        };
        let predicted = m.latest - m.new;
        if o.latest < m.latest {
            return Judgement::Fails(format!("{name}: the log end moved back from {} to {} since the plan (truncated or recreated): the predicted lag {predicted} cannot hold", m.latest, o.latest));
        }
        let produced = o.latest - m.latest;
        let Some(c) = o.committed else {
            return Judgement::Fails(format!("{name}: the group has no committed offset any more (the move to {} was deleted)", m.new));
        };
        if c < m.new {
            return Judgement::Fails(format!("{name}: committed {c}, below the new offset {}: the consumers resumed from elsewhere and overwrote the move (lag {} instead of at most {})", m.new, o.latest - c, predicted + produced));
        }
        if c < o.earliest {
            return Judgement::Fails(format!("{name}: records {c} to {} were deleted (retention) before they were reprocessed", o.earliest - 1));
        }
        let (lag, consumed) = (o.latest - c, c - m.new);
        if consuming && consumed == 0 && o.latest > m.new {
            pending.push(format!("{name}: lag {lag} (predicted {predicted} + {produced} produced since), nothing consumed from {} yet", m.new));
            continue;
        }
        detail.push(format!("{name}: lag after the commit {predicted} as predicted (+{produced} produced since), now {lag}, {consumed} consumed"));
    }
    if !pending.is_empty() {
        return Judgement::Pending(pending.join("; "));
    }
    Judgement::Holds(detail.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv(partition: i32, old: i64, new: i64, latest: i64) -> Move {
        Move { topic: "t".into(), partition, old: Some(old), new, earliest: 0, latest }
    }

    fn now(v: &[(i32, Option<i64>, i64, i64)]) -> BTreeMap<TopicPartition, Observed> {
        v.iter().map(|(p, c, e, l)| (TopicPartition { topic: "t".into(), partition: *p }, Observed { committed: *c, earliest: *e, latest: *l })).collect()
    }

    #[test]
    fn the_lag_right_after_the_commit_is_the_predicted_one_plus_what_was_produced_since() {
        let m = [mv(0, 100, 40, 100)];
        // Nothing resumed (pause: none): the commit itself is the whole prediction.
        assert_eq!(judge(&m, &now(&[(0, Some(40), 0, 103)]), false), Judgement::Holds("t:0: lag after the commit 60 as predicted (+3 produced since), now 63, 0 consumed".into()));
    }

    #[test]
    fn resumed_consumers_must_consume_from_the_new_offset_and_the_lag_then_falls() {
        let m = [mv(0, 100, 40, 100), mv(1, 10, 10, 10)];
        let j = judge(&m, &now(&[(0, Some(40), 0, 100), (1, Some(10), 0, 10)]), true);
        assert!(matches!(&j, Judgement::Pending(s) if s == "t:0: lag 60 (predicted 60 + 0 produced since), nothing consumed from 40 yet"), "{j:?}");
        let j = judge(&m, &now(&[(0, Some(70), 0, 100), (1, Some(10), 0, 10)]), true);
        assert!(matches!(&j, Judgement::Holds(s) if s.contains("t:0: lag after the commit 60 as predicted (+0 produced since), now 30, 30 consumed") && s.contains("t:1: lag after the commit 0")), "{j:?}");
    }

    #[test]
    fn a_commit_below_the_new_offset_means_the_consumers_resumed_from_elsewhere() {
        let m = [mv(0, 100, 40, 100)];
        let j = judge(&m, &now(&[(0, Some(12), 0, 100)]), true);
        assert_eq!(j, Judgement::Fails("t:0: committed 12, below the new offset 40: the consumers resumed from elsewhere and overwrote the move (lag 88 instead of at most 60)".into()));
        assert!(matches!(judge(&m, &now(&[(0, None, 0, 100)]), true), Judgement::Fails(s) if s.contains("no committed offset any more")));
    }

    #[test]
    fn a_log_that_moved_back_or_lost_the_replay_range_fails_the_prediction() {
        let m = [mv(0, 100, 40, 100)];
        assert!(matches!(judge(&m, &now(&[(0, Some(40), 0, 90)]), false), Judgement::Fails(s) if s.contains("moved back from 100 to 90")));
        assert!(matches!(judge(&m, &now(&[(0, Some(45), 50, 100)]), true), Judgement::Fails(s) if s.contains("records 45 to 49 were deleted")));
        assert!(matches!(judge(&m, &BTreeMap::new(), false), Judgement::Pending(s) if s == "t:0: not read"), "unknown is not a pass");
    }
}
