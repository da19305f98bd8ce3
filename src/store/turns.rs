//! Turns: the two jobs that copy the store in bulk take turns instead of running at once.
//!
//! A Kafka cycle holds the brokers' answers, the snapshot built from them, its batch and
//! the derivation's scratch until it has stored; a rule file's evaluation holds its
//! dataset (every series its selectors pick, windows included) and its results. At
//! 4,000 groups × 10 partitions each is 20 to 30 MB for a second or less, over a store
//! of about 60 MB. Every source loop and every rule file's loop ticks from the agent's
//! start, so with equal intervals they ran together every cycle and their peaks added
//! up (the agent's peak RSS was set there); an evaluation that ran beside the sample
//! also read the previous sample, one interval old.
//!
//! Evaluations share their turn with each other (at most two run at once anyway); a
//! Kafka cycle takes it alone. Either side waits a bounded time, then goes ahead beside
//! the other: a slow evaluation never keeps the data from coming in, and a slow broker
//! never stops the rules. The waits are counted: `streamguard_sample_turn_wait_seconds_total`
//! per source, `streamguard_rule_group_turn_wait_seconds_total` per rule file.

use std::time::Duration;

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Turns {
    lock: RwLock<()>,
}

/// Held for the length of a turn; `None` inside when the wait ran out.
pub type EvaluationTurn<'a> = Option<RwLockReadGuard<'a, ()>>;
pub type SampleTurn<'a> = Option<RwLockWriteGuard<'a, ()>>;

impl Turns {
    /// An evaluation's turn: shared with other evaluations, after a sample that is
    /// storing, waiting at most `most` for it.
    pub async fn evaluation(&self, most: Duration) -> EvaluationTurn<'_> {
        tokio::time::timeout(most, self.lock.read()).await.ok()
    }

    /// A sample cycle's turn: alone, after the evaluations running, waiting at most
    /// `most` for them. Evaluations that ask while a cycle waits queue behind it (the
    /// lock is fair), so the cycle waits for at most the ones already running.
    pub async fn sample(&self, most: Duration) -> SampleTurn<'_> {
        tokio::time::timeout(most, self.lock.write()).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    const LONG: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn an_evaluation_waits_for_a_storing_sample_and_starts_when_it_ends() {
        let turns = Arc::new(Turns::default());
        let sample = turns.sample(LONG).await;
        assert!(sample.is_some());
        let waiting = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.evaluation(LONG).await.is_some() })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the evaluation ran beside the sample");
        drop(sample);
        assert!(tokio::time::timeout(LONG, waiting).await.unwrap().unwrap(), "the evaluation got its turn");
    }

    #[tokio::test]
    async fn evaluations_share_their_turn() {
        let turns = Turns::default();
        let a = turns.evaluation(LONG).await;
        let started = Instant::now();
        let b = turns.evaluation(LONG).await;
        assert!(a.is_some() && b.is_some());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_sample_waits_a_bounded_time_for_evaluations_then_goes_ahead() {
        let turns = Turns::default();
        let evaluation = turns.evaluation(LONG).await;
        assert!(evaluation.is_some());
        let started = Instant::now();
        assert!(turns.sample(Duration::from_millis(300)).await.is_none(), "no turn while an evaluation runs");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(started.elapsed() < LONG);
        drop(evaluation);
        assert!(turns.sample(Duration::from_millis(300)).await.is_some());
    }

    #[tokio::test]
    async fn an_evaluation_asking_while_a_sample_waits_queues_behind_it() {
        let turns = Arc::new(Turns::default());
        let running = turns.evaluation(LONG).await;
        let sample = {
            let turns = turns.clone();
            tokio::spawn(async move {
                let turn = turns.sample(LONG).await;
                let at = Instant::now();
                drop(turn);
                at
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let later = {
            let turns = turns.clone();
            tokio::spawn(async move {
                let _turn = turns.evaluation(LONG).await;
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!later.is_finished(), "a later evaluation went ahead of the waiting sample");
        drop(running);
        let (sampled, evaluated) = (sample.await.unwrap(), later.await.unwrap());
        assert!(sampled <= evaluated);
    }
}
