//! The derive stage, between the store and evaluation: signals computed from a source's
//! history after each sample (time lag, rates, status, DLQ ratio), one file per source.
//!
//! Pure: the sample just taken and the store's history go in, observations come out;
//! the agent records both in the store as one snapshot. Samplers never read the store.

pub mod kafka;
