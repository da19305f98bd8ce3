//! Declarative rules kept in git: files (`file`), the condition language (`expr`), the
//! pure evaluator (`eval`), SLO math (`slo`), trends (`trend`), rule unit tests
//! (`testing`), Prometheus export (`export`) and the verdicts evaluation hands to
//! remediation (`verdict`).

pub mod eval;
pub mod export;
pub mod expr;
pub mod file;
pub mod slo;
pub mod testing;
pub mod trend;
pub mod verdict;
