//! The preview of an offset move: per partition old → new, records to reprocess or to
//! skip, and the limits' verdict. Pure; `streamguard offsets plan` prints it, `apply`
//! journals and audits it.

use serde::Serialize;

use super::compute::{Move, ResetMode};
use super::limits::Breach;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preview {
    pub group: String,
    pub mode: ResetMode,
    pub moves: Vec<Move>,
    pub replayed: u64,
    pub skipped: u64,
    /// Empty: within every limit.
    pub breaches: Vec<Breach>,
}

impl Preview {
    pub fn new(group: &str, mode: ResetMode, moves: Vec<Move>, breaches: Vec<Breach>) -> Preview {
        let replayed = moves.iter().map(Move::replayed).sum();
        let skipped = moves.iter().map(Move::skipped).sum();
        Preview { group: group.to_string(), mode, moves, replayed, skipped, breaches }
    }

    pub fn refused(&self) -> bool {
        !self.breaches.is_empty()
    }

    /// A table like `kafka-consumer-groups --reset-offsets --dry-run`, with the counts.
    pub fn table(&self) -> String {
        let mut s = format!("group {} ({})\n", self.group, self.mode.name());
        s.push_str(&format!("{:<32} {:>9} {:>12} {:>12} {:>10} {:>10}\n", "TOPIC", "PARTITION", "OLD-OFFSET", "NEW-OFFSET", "REPLAY", "SKIP"));
        for m in &self.moves {
            let old = m.old.map_or("-".to_string(), |o| o.to_string());
            s.push_str(&format!("{:<32} {:>9} {:>12} {:>12} {:>10} {:>10}\n", m.topic, m.partition, old, m.new, m.replayed(), m.skipped()));
        }
        s.push_str(&format!("total: {} records to reprocess, {} to skip, {} partitions\n", self.replayed, self.skipped, self.moves.len()));
        if self.breaches.is_empty() {
            s.push_str("within every limit\n");
        } else {
            for b in &self.breaches {
                s.push_str(&format!("REFUSED ({}): {}\n", b.limit, b.reason));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_each_partition_and_the_totals_and_says_why_it_is_refused() {
        let moves = vec![
            Move { topic: "orders".into(), partition: 0, old: Some(100), new: 40, earliest: 0, latest: 100 },
            Move { topic: "orders".into(), partition: 1, old: None, new: 5, earliest: 0, latest: 9 },
        ];
        let p = Preview::new("g", ResetMode::Earliest, moves, vec![Breach { limit: "max_replayed", reason: "60 > 10".into() }]);
        assert_eq!((p.replayed, p.skipped, p.refused()), (60, 0, true));
        let t = p.table();
        assert!(t.contains("orders                                   0          100           40         60          0"), "{t}");
        assert!(t.contains("orders                                   1            -            5          0          0"), "{t}");
        assert!(t.contains("total: 60 records to reprocess, 0 to skip, 2 partitions"), "{t}");
        assert!(t.contains("REFUSED (max_replayed): 60 > 10"), "{t}");
    }
}
