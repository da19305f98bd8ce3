//! A small direct Kafka protocol client for the sampling hot path, on the maintained
//! `kafka-protocol` crate (messages only) over tokio.
//!
//! librdkafka sends one `OffsetFetch` per group (no KIP-709) and, through its admin API,
//! a coordinator look-up, a `ConsumerGroupDescribe` and a `DescribeGroups` per group:
//! about six requests per group. This client sends what a sample needs and no more:
//! - `ApiVersions` once per connection (versions negotiated per API),
//! - `ListGroups` once per broker,
//! - `FindCoordinator` v4+ with many keys per request, cached until a coordinator moves,
//! - `OffsetFetch` v8+ with many groups per request, sharded by coordinator,
//! - `DescribeGroups` / `ConsumerGroupDescribe` batched, only for groups that have members
//!   (an `Empty` group's description is its listing) and whose description is not
//!   cached (a `Stable` group's description stands while it stays `Stable`, up to a
//!   refresh age: [`describe_cache`]),
//! - `ListOffsets` grouped by partition leader (earliest, latest, read_committed latest),
//! - `Metadata` only for the topics some group consumes (and DLQ candidates), cached and
//!   refreshed on a slower clock or on a leader error.
//!
//! Security: PLAINTEXT, SSL (rustls), SASL PLAIN and SCRAM-SHA-256/512 over either.
//! Anything else (GSSAPI, OAUTHBEARER, a librdkafka property this client cannot honour)
//! is refused by [`crate::config::kafka_wire::WireConfig::from_properties`] so the caller can fall back to
//! librdkafka.
//!
//! It deliberately does not compute lag or build snapshots: `super::kafka_direct` does.
//!
//! # Guarantees
//! - Every request has a deadline; a connection whose request timed out is dropped, never
//!   reused with a response still in flight.
//! - At most `max_in_flight` requests per broker at once (one request per connection).
//! - Responses larger than [`conn::MAX_RESPONSE_BYTES`] are refused before allocation.
//! - Passwords never appear in errors, logs or `Debug` output.

pub mod client;
pub mod conn;
pub mod describe_cache;
pub mod groups;
pub mod offsets;
pub mod sasl;
pub mod tls;

use std::time::Duration;

/// Errors of the direct client. Kafka error codes stay typed (`code`) so retry decisions
/// never read message text.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The TCP or TLS connection failed or broke.
    #[error("{broker}: connection failed: {message}")]
    Transport { broker: String, message: String },
    /// TLS could not be set up (bad CA file, bad server name).
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// SASL authentication was refused or could not be completed.
    #[error("{broker}: SASL {mechanism} authentication failed: {message}")]
    Auth { broker: String, mechanism: &'static str, message: String },
    /// No answer before the deadline.
    #[error("{op} timed out after {timeout:?}")]
    Timeout { op: &'static str, timeout: Duration },
    /// A response that could not be decoded or did not match the request.
    #[error("{op}: bad response: {message}")]
    Protocol { op: &'static str, message: String },
    /// The broker does not support a version this client needs (the caller falls back).
    #[error("broker does not support {api} v{need}+ (it offers up to v{has})")]
    Unsupported { api: &'static str, need: i16, has: i16 },
    /// The broker answered with a Kafka error code.
    #[error("{op} failed: {name} ({code})")]
    Kafka { op: &'static str, code: i16, name: String },
    /// Metadata names no broker for a node id (coordinator or leader).
    #[error("no address for broker {0}")]
    UnknownBroker(i32),
}

impl WireError {
    /// An error from a Kafka error code.
    pub fn kafka(op: &'static str, code: i16) -> Self {
        let name = kafka_protocol::ResponseError::try_from_code(code).map_or_else(|| "NONE".to_string(), |e| format!("{e:?}"));
        WireError::Kafka { op, code, name }
    }

    /// The Kafka error code, when the broker sent one.
    pub fn code(&self) -> Option<i16> {
        match self {
            WireError::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The sampler's error type for a direct-client error, so both paths report failures
/// alike (a Kafka code keeps its librdkafka name; transport and auth failures map to
/// librdkafka's codes for them).
pub fn to_admin(e: WireError) -> crate::sample::kafka_admin::AdminError {
    use crate::sample::kafka_admin::AdminError;
    use rdkafka::error::RDKafkaErrorCode as C;
    let op = match &e {
        WireError::Timeout { op, timeout } => return AdminError::Timeout { op, timeout: *timeout },
        WireError::Kafka { op, .. } | WireError::Protocol { op, .. } => *op,
        _ => "connect",
    };
    let code = match &e {
        WireError::Kafka { code, .. } => rdkafka::bindings::rd_kafka_resp_err_t::try_from(i32::from(*code)).map_or(C::Unknown, C::from),
        WireError::Transport { .. } | WireError::UnknownBroker(_) => C::BrokerTransportFailure,
        WireError::Tls(_) => C::SSL,
        WireError::Auth { .. } => C::Authentication,
        WireError::Unsupported { .. } => C::UnsupportedVersion,
        WireError::Protocol { .. } | WireError::Timeout { .. } => C::BadMessage,
    };
    AdminError::Kafka { op, code, message: e.to_string() }
}

/// Kafka error codes the client acts on (from the protocol guide).
pub mod codes {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
    pub const OFFSET_NOT_AVAILABLE: i16 = 78;

    /// The coordinator moved or is not ready: look it up again.
    pub fn coordinator_moved(code: i16) -> bool {
        matches!(code, NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE)
    }

    /// Worth retrying after a short pause (same coordinator).
    pub fn coordinator_loading(code: i16) -> bool {
        code == COORDINATOR_LOAD_IN_PROGRESS
    }

    /// The cached leader (or its epoch) is wrong: refresh metadata and retry.
    pub fn stale_leader(code: i16) -> bool {
        matches!(code, NOT_LEADER_OR_FOLLOWER | LEADER_NOT_AVAILABLE | FENCED_LEADER_EPOCH | UNKNOWN_LEADER_EPOCH | UNKNOWN_TOPIC_OR_PARTITION | OFFSET_NOT_AVAILABLE | REQUEST_TIMED_OUT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_errors_keep_the_code_and_a_readable_name() {
        let e = WireError::kafka("OffsetFetch", codes::NOT_COORDINATOR);
        assert_eq!(e.code(), Some(16));
        assert!(e.to_string().contains("NotCoordinator"), "{e}");
        assert!(codes::coordinator_moved(16) && !codes::coordinator_moved(14));
        assert!(codes::stale_leader(codes::FENCED_LEADER_EPOCH));
    }
}
