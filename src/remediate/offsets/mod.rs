//! Reprocessing made safe (issue 11): pause → wait until the group is Empty → rewind or
//! skip (poison records copied to a dead-letter topic first) → commit → resume → verify,
//! journaled in the remediation journal and audited in its audit log.
//!
//! - [`compute`], [`limits`], [`preview`], [`verify`]: pure (new offsets per mode,
//!   blast-radius limits that refuse rather than truncate, the preview table, whether
//!   the lag moved as predicted).
//! - [`kafka`], [`pause`]: the edges (admin API, records, dead-letter copies; commands
//!   and Kafka Connect).
//! - [`procedure`]: the journaled steps and their recovery after a crash.
//!
//! Used by `streamguard offsets plan|apply|resume`.

pub mod cli;
pub mod compute;
pub mod kafka;
pub mod limits;
pub mod pause;
pub mod preview;
pub mod procedure;
pub mod verify;
