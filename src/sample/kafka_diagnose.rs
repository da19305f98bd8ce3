//! Why a Kafka cluster could not be sampled, found out directly instead of by reading
//! librdkafka's error text (which carries timings such as "after 0ms", changes between
//! identical runs and rarely names the cause).
//!
//! [`diagnose`] checks every bootstrap server at once, each within one timeout:
//! 1. parse `host:port` (librdkafka's `PLAINTEXT://` style prefixes and a missing port,
//!    which means 9092, are accepted);
//! 2. resolve the host;
//! 3. open a TCP connection;
//! 4. only when `security.protocol` is unset or `plaintext`: send a Kafka `ApiVersions`
//!    v0 request and check that the answer is a well-formed Kafka response carrying the
//!    same correlation id.
//!
//! The cluster is diagnosed as [`Unreachable`] only when *no* bootstrap server passes;
//! the cause reported is the first server's, in configured order, so the same setup
//! always gives the same message. When a server passes, the cause is elsewhere (ACLs,
//! a broker behind the bootstrap one, a slow coordinator…) and the caller keeps the
//! sampler's own error.
//!
//! # Guarantees
//! - Bounded: each server gets `timeout` for resolution, connection and the answer
//!   together; a resolver that hangs is abandoned after `timeout` (its thread finishes
//!   on its own) and counts as a timeout.
//! - Messages are a function of the configuration and the cause only: no timings
//!   measured, no OS or librdkafka text.
//!
//! # Not done here
//! No TLS or SASL handshakes (a secured listener is only checked for a TCP connection),
//! no metadata requests, no retries; nothing is sent to the brokers the bootstrap
//! servers advertise.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The port librdkafka uses for a bootstrap server written without one.
pub const DEFAULT_PORT: u16 = 9092;

/// Kafka's `ApiVersions` request key.
const API_VERSIONS_KEY: i16 = 18;

/// Correlation id of the probe ("SG" and 1); any fixed value would do, a mismatch is
/// what matters.
pub const CORRELATION_ID: i32 = 0x5347_0001;

const CLIENT_ID: &str = "streamguard-diagnose";

/// Larger answers are not an `ApiVersions` v0 response (a real one is a few hundred
/// bytes; the first four bytes of "HTTP/1.1 …" read as about 1.2 GB).
const MAX_RESPONSE_BYTES: i32 = 64 * 1024;

/// Turns `host:port` into socket addresses; [`system_resolver`] outside tests.
pub type Resolver = fn(&str) -> io::Result<Vec<SocketAddr>>;

/// The operating system's resolver (`getaddrinfo`).
pub fn system_resolver(host_port: &str) -> io::Result<Vec<SocketAddr>> {
    Ok(host_port.to_socket_addrs()?.collect())
}

/// Why no bootstrap server of a cluster can be used. Each variant's message is stable:
/// it names the configured server, never a resolved address or an OS message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreachable {
    #[error("invalid bootstrap server {server:?} (expected host:port)")]
    InvalidAddress { server: String },
    #[error("cannot resolve {host}: unknown host")]
    UnknownHost { host: String },
    #[error("cannot reach {server}: connection refused")]
    Refused { server: String },
    #[error("cannot reach {server}: timed out after {}", humantime::format_duration(*timeout))]
    TimedOut { server: String, timeout: Duration },
    #[error("cannot reach {server}: {reason}")]
    Network { server: String, reason: NetworkReason },
    #[error("{server} is not a Kafka broker")]
    NotKafka { server: String },
    #[error("{server} accepted a connection but did not answer a Kafka request within {}", humantime::format_duration(*timeout))]
    NoAnswer { server: String, timeout: Duration },
}

impl Unreachable {
    /// A bounded name of the cause, for machine-readable output.
    pub fn as_str(&self) -> &'static str {
        match self {
            Unreachable::InvalidAddress { .. } => "invalid_address",
            Unreachable::UnknownHost { .. } => "unknown_host",
            Unreachable::Refused { .. } => "connection_refused",
            Unreachable::TimedOut { .. } => "timeout",
            Unreachable::Network { .. } => "network_unreachable",
            Unreachable::NoAnswer { .. } => "no_answer",
            Unreachable::NotKafka { .. } => "not_kafka",
        }
    }
}

/// A connection failure other than refused or timed out, from a fixed set (the OS
/// message is not used: it varies between systems).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkReason {
    HostUnreachable,
    NetworkUnreachable,
    AddressNotAvailable,
    PermissionDenied,
    Other,
}

impl NetworkReason {
    fn from_kind(kind: io::ErrorKind) -> NetworkReason {
        match kind {
            io::ErrorKind::HostUnreachable => NetworkReason::HostUnreachable,
            io::ErrorKind::NetworkUnreachable => NetworkReason::NetworkUnreachable,
            io::ErrorKind::AddrNotAvailable => NetworkReason::AddressNotAvailable,
            io::ErrorKind::PermissionDenied => NetworkReason::PermissionDenied,
            _ => NetworkReason::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NetworkReason::HostUnreachable => "host unreachable",
            NetworkReason::NetworkUnreachable => "network unreachable",
            NetworkReason::AddressNotAvailable => "address not available",
            NetworkReason::PermissionDenied => "permission denied",
            NetworkReason::Other => "connection failed",
        }
    }
}

impl std::fmt::Display for NetworkReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the listener is expected to speak plain Kafka, per librdkafka's
/// `security.protocol` (default `plaintext`; the value is case-insensitive).
pub fn speaks_plaintext(properties: &BTreeMap<String, String>) -> bool {
    properties.get("security.protocol").is_none_or(|p| p.trim().eq_ignore_ascii_case("plaintext"))
}

/// Diagnoses the cluster at `bootstrap` (comma-separated servers) configured with
/// librdkafka `properties`: `None` when some bootstrap server is reachable (and, over
/// plaintext, answers as Kafka), else the first server's cause. Blocks for at most
/// about `timeout`.
pub fn diagnose(bootstrap: &str, properties: &BTreeMap<String, String>, timeout: Duration) -> Option<Unreachable> {
    diagnose_with(bootstrap, speaks_plaintext(properties), timeout, system_resolver)
}

/// [`diagnose`] with the Kafka check on or off and a given resolver.
pub fn diagnose_with(bootstrap: &str, speak_kafka: bool, timeout: Duration, resolve: Resolver) -> Option<Unreachable> {
    let servers: Vec<String> = bootstrap.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    if servers.is_empty() {
        return Some(Unreachable::InvalidAddress { server: bootstrap.to_string() });
    }
    let deadline = Instant::now() + timeout;
    let (tx, rx) = mpsc::channel();
    for (i, server) in servers.iter().enumerate() {
        let (tx, server) = (tx.clone(), server.clone());
        // Detached: a resolver stuck past the deadline is left to finish on its own.
        std::thread::spawn(move || {
            // The receiver may be gone (deadline passed): nothing left to report to.
            tx.send((i, check_server(&server, speak_kafka, timeout, resolve))).ok();
        });
    }
    drop(tx);
    let mut results: Vec<Option<Result<(), Unreachable>>> = vec![None; servers.len()];
    // A little past the deadline, so a check that itself times out at the deadline
    // reports its own (more precise) cause.
    let give_up = deadline + Duration::from_millis(200);
    while results.iter().any(Option::is_none) {
        let left = give_up.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, r)) => {
                if r.is_ok() {
                    return None;
                }
                results[i] = Some(r);
            }
            Err(_) => break,
        }
    }
    match results.into_iter().next().flatten() {
        Some(Err(cause)) => Some(cause),
        Some(Ok(())) => None,
        None => Some(Unreachable::TimedOut { server: servers[0].clone(), timeout }),
    }
}

/// `host:port` to connect to and the host alone (for messages), from one bootstrap
/// server as librdkafka accepts it: an optional `proto://` prefix, an optional port,
/// IPv6 addresses in brackets.
pub fn split_server(server: &str) -> Result<(String, String), Unreachable> {
    let invalid = || Unreachable::InvalidAddress { server: server.to_string() };
    let s = server.split_once("://").map_or(server, |(_, rest)| rest);
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(invalid)?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or_else(invalid)?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => return Err(invalid()), // bare IPv6
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| invalid())?,
        None => DEFAULT_PORT,
    };
    if host.is_empty() || host.contains(['/', ' ']) {
        return Err(invalid());
    }
    let host_port = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    Ok((host_port, host.to_string()))
}

/// One server: resolve, connect to each address until one accepts, then (over
/// plaintext) the `ApiVersions` probe. All within `timeout`.
fn check_server(server: &str, speak_kafka: bool, timeout: Duration, resolve: Resolver) -> Result<(), Unreachable> {
    let deadline = Instant::now() + timeout;
    let (host_port, host) = split_server(server)?;
    let addrs = resolve(&host_port).map_err(|_| Unreachable::UnknownHost { host: host.clone() })?;
    if addrs.is_empty() {
        return Err(Unreachable::UnknownHost { host });
    }
    let mut first_error = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) if speak_kafka => return probe(stream, server, deadline, timeout),
            Ok(_) => return Ok(()),
            Err(e) => {
                first_error.get_or_insert_with(|| connect_error(server, e.kind(), timeout));
            }
        }
    }
    // No attempt at all: resolution used up the time.
    Err(first_error.unwrap_or_else(|| Unreachable::TimedOut { server: server.to_string(), timeout }))
}

/// The cause of a failed TCP connect.
fn connect_error(server: &str, kind: io::ErrorKind, timeout: Duration) -> Unreachable {
    match kind {
        io::ErrorKind::ConnectionRefused => Unreachable::Refused { server: server.to_string() },
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Unreachable::TimedOut { server: server.to_string(), timeout },
        k => Unreachable::Network { server: server.to_string(), reason: NetworkReason::from_kind(k) },
    }
}

/// An `ApiVersions` v0 request: size, api_key 18, api_version 0, correlation id,
/// client id (request header v1); the v0 body is empty.
pub fn api_versions_request(correlation_id: i32) -> Vec<u8> {
    let mut body = Vec::with_capacity(32);
    body.extend_from_slice(&API_VERSIONS_KEY.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&correlation_id.to_be_bytes());
    // CLIENT_ID is a short constant: its length fits an i16.
    body.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
    body.extend_from_slice(CLIENT_ID.as_bytes());
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as i32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Why an answer is not an `ApiVersions` v0 response to our request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadFrame {
    /// The size prefix is negative, too small or too large.
    Size,
    CorrelationId,
    /// The body is not error code, api count and that many (key, min, max) entries.
    Body,
}

/// Validates the size prefix of an answer: the number of bytes that follow it.
pub fn response_size(prefix: [u8; 4]) -> Result<usize, BadFrame> {
    let size = i32::from_be_bytes(prefix);
    // correlation id (4) + error code (2) + api count (4)
    if !(10..=MAX_RESPONSE_BYTES).contains(&size) {
        return Err(BadFrame::Size);
    }
    usize::try_from(size).map_err(|_| BadFrame::Size)
}

/// Checks an `ApiVersions` v0 response frame (the bytes after the size prefix):
/// response header v0 (correlation id), then error code, then an array of
/// (api_key, min_version, max_version). Any error code is accepted: a broker that
/// does not support v0 still answers in this format (with UNSUPPORTED_VERSION).
pub fn check_api_versions_response(frame: &[u8], correlation_id: i32) -> Result<(), BadFrame> {
    let int32 = |at: usize| frame.get(at..at + 4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(i32::from_be_bytes);
    if int32(0).ok_or(BadFrame::Size)? != correlation_id {
        return Err(BadFrame::CorrelationId);
    }
    let count = int32(6).ok_or(BadFrame::Body)?;
    let count = usize::try_from(count).map_err(|_| BadFrame::Body)?;
    let needed = count.checked_mul(6).and_then(|n| n.checked_add(10)).ok_or(BadFrame::Body)?;
    if needed > frame.len() {
        return Err(BadFrame::Body);
    }
    Ok(())
}

/// Sends the probe on a connected stream and checks the answer.
///
/// A server still silent after [`NUDGE_AFTER`] is sent a blank line: line-based
/// servers (HTTP, which waits for the end of a request line that our binary request
/// never has) then answer and are recognised as not Kafka, while a slow broker has
/// already received a complete request and answers it before reading any further.
fn probe(mut stream: TcpStream, server: &str, deadline: Instant, timeout: Duration) -> Result<(), Unreachable> {
    let not_kafka = || Unreachable::NotKafka { server: server.to_string() };
    let classify = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Unreachable::NoAnswer { server: server.to_string(), timeout },
        // Closed or reset without a Kafka answer.
        _ => not_kafka(),
    };
    stream.set_nodelay(true).ok();
    set_timeouts(&stream, deadline).map_err(classify)?;
    stream.write_all(&api_versions_request(CORRELATION_ID)).map_err(classify)?;
    let mut prefix = [0u8; 4];
    let mut filled = 0;
    let nudge_at = (Instant::now() + NUDGE_AFTER).min(deadline);
    match read_full(&mut stream, &mut prefix, &mut filled, nudge_at) {
        Ok(()) => {}
        Err(e) if is_timeout(&e) && filled == 0 && Instant::now() < deadline => {
            stream.write_all(b"\r\n\r\n").map_err(classify)?;
            read_full(&mut stream, &mut prefix, &mut filled, deadline).map_err(classify)?;
        }
        Err(e) => return Err(classify(e)),
    }
    let size = response_size(prefix).map_err(|_| not_kafka())?;
    let mut frame = vec![0u8; size];
    read_full(&mut stream, &mut frame, &mut 0, deadline).map_err(classify)?;
    check_api_versions_response(&frame, CORRELATION_ID).map_err(|_| not_kafka())
}

/// How long a server may stay silent before it is sent a blank line (see [`probe`]);
/// a broker answers `ApiVersions` within milliseconds.
const NUDGE_AFTER: Duration = Duration::from_millis(250);

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

fn set_timeouts(stream: &TcpStream, deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    stream.set_read_timeout(Some(left))?;
    stream.set_write_timeout(Some(left))
}

/// `read_exact` from `buf[*filled..]` on, with the remaining time re-armed before every
/// read; `filled` counts what arrived, also when it fails.
fn read_full(stream: &mut TcpStream, buf: &mut [u8], filled: &mut usize, deadline: Instant) -> io::Result<()> {
    while *filled < buf.len() {
        set_timeouts(stream, deadline)?;
        match stream.read(&mut buf[*filled..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => *filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const T: Duration = Duration::from_secs(2);

    /// A loopback port nothing listens on. Not a freed ephemeral port: a test running
    /// in parallel could bind that again before the connection is tried (seen once).
    /// Port 1 (tcpmux) is privileged, below the ephemeral range, and unused here.
    fn closed_port() -> u16 {
        1
    }

    /// A listener on a free port whose every connection is handed to `serve`.
    fn serve(serve: impl Fn(TcpStream) + Send + 'static) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                serve(conn);
            }
        });
        addr
    }

    /// Reads one request frame (size-prefixed) and returns its bytes after the size.
    fn read_request(conn: &mut TcpStream) -> Vec<u8> {
        let mut size = [0u8; 4];
        conn.read_exact(&mut size).unwrap();
        let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
        conn.read_exact(&mut frame).unwrap();
        frame
    }

    /// An `ApiVersions` v0 response with `apis` entries, for `correlation_id`.
    fn response(correlation_id: i32, apis: &[(i16, i16, i16)]) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(&correlation_id.to_be_bytes());
        frame.extend_from_slice(&0i16.to_be_bytes());
        frame.extend_from_slice(&(apis.len() as i32).to_be_bytes());
        for (k, min, max) in apis {
            for v in [k, min, max] {
                frame.extend_from_slice(&v.to_be_bytes());
            }
        }
        let mut out = (frame.len() as i32).to_be_bytes().to_vec();
        out.extend(frame);
        out
    }

    /// A fake broker answering each request with the same correlation id plus `shift`.
    fn fake_kafka(shift: i32) -> String {
        serve(move |mut conn| {
            let req = read_request(&mut conn);
            let correlation = i32::from_be_bytes(req[4..8].try_into().unwrap());
            conn.write_all(&response(correlation + shift, &[(0, 0, 11), (18, 0, 4)])).unwrap();
        })
    }

    fn no_host(_: &str) -> io::Result<Vec<SocketAddr>> {
        Err(io::Error::other("failed to lookup address information: Name or service not known"))
    }

    fn no_addresses(_: &str) -> io::Result<Vec<SocketAddr>> {
        Ok(Vec::new())
    }

    fn slow_resolver(host_port: &str) -> io::Result<Vec<SocketAddr>> {
        std::thread::sleep(Duration::from_secs(3));
        system_resolver(host_port)
    }

    #[test]
    fn the_api_versions_request_is_size_key_version_correlation_id_and_client_id() {
        let req = api_versions_request(7);
        let mut want = vec![0, 0, 0, 30, 0, 18, 0, 0, 0, 0, 0, 7, 0, 20];
        want.extend_from_slice(b"streamguard-diagnose");
        assert_eq!(req, want);
    }

    #[test]
    fn a_response_must_carry_our_correlation_id_and_a_complete_api_list() {
        let ok = response(9, &[(18, 0, 4)]);
        assert_eq!(response_size(ok[..4].try_into().unwrap()), Ok(ok.len() - 4));
        assert_eq!(check_api_versions_response(&ok[4..], 9), Ok(()));
        assert_eq!(check_api_versions_response(&ok[4..], 10), Err(BadFrame::CorrelationId));
        assert_eq!(check_api_versions_response(&ok[4..ok.len() - 1], 9), Err(BadFrame::Body), "truncated");
        assert_eq!(response_size(*b"HTTP"), Err(BadFrame::Size), "an HTTP status line is no Kafka size");
        assert_eq!(response_size([0, 0, 0, 4]), Err(BadFrame::Size));
        assert_eq!(response_size([0xff, 0xff, 0xff, 0xf0]), Err(BadFrame::Size));
    }

    #[test]
    fn a_closed_port_is_connection_refused_with_a_stable_message() {
        let server = format!("127.0.0.1:{}", closed_port());
        let cause = diagnose_with(&server, true, T, system_resolver).unwrap();
        assert_eq!(cause, Unreachable::Refused { server: server.clone() });
        assert_eq!(cause.to_string(), format!("cannot reach {server}: connection refused"));
        assert_eq!(cause.as_str(), "connection_refused");
    }

    #[test]
    fn an_http_server_is_not_a_kafka_broker() {
        let server = serve(|mut conn| {
            let mut buf = [0u8; 256];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        });
        let cause = diagnose_with(&server, true, T, system_resolver).unwrap();
        assert_eq!(cause.to_string(), format!("{server} is not a Kafka broker"));
        assert_eq!(cause.as_str(), "not_kafka");
    }

    #[test]
    fn an_http_server_that_waits_for_the_end_of_a_request_line_is_not_a_kafka_broker() {
        // As Go's net/http and Jetty do: nothing is answered before a line ends.
        let server = serve(|mut conn| {
            let mut seen = Vec::new();
            let mut buf = [0u8; 64];
            while !seen.windows(2).any(|w| w == b"\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        });
        let started = Instant::now();
        assert_eq!(diagnose_with(&server, true, T, system_resolver), Some(Unreachable::NotKafka { server }));
        assert!(started.elapsed() < T, "answered after the nudge, not at the timeout: {:?}", started.elapsed());
    }

    #[test]
    fn a_broker_slower_than_the_nudge_still_counts_as_kafka() {
        let server = serve(|mut conn| {
            let req = read_request(&mut conn);
            std::thread::sleep(NUDGE_AFTER * 2);
            let correlation = i32::from_be_bytes(req[4..8].try_into().unwrap());
            conn.write_all(&response(correlation, &[(18, 0, 4)])).unwrap();
        });
        assert_eq!(diagnose_with(&server, true, T, system_resolver), None);
    }

    #[test]
    fn a_server_that_closes_without_answering_is_not_a_kafka_broker() {
        let server = serve(drop);
        assert_eq!(diagnose_with(&server, true, T, system_resolver), Some(Unreachable::NotKafka { server }));
    }

    #[test]
    fn a_server_that_stays_silent_gives_no_answer_within_the_timeout() {
        let server = serve(|conn| {
            std::thread::sleep(Duration::from_secs(3));
            drop(conn);
        });
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        let cause = diagnose_with(&server, true, timeout, system_resolver).unwrap();
        assert!(started.elapsed() < Duration::from_secs(2), "bounded by the timeout: {:?}", started.elapsed());
        assert_eq!(cause.to_string(), format!("{server} accepted a connection but did not answer a Kafka request within 300ms"));
    }

    #[test]
    fn a_well_formed_api_versions_answer_means_the_cluster_looks_fine() {
        assert_eq!(diagnose_with(&fake_kafka(0), true, T, system_resolver), None);
    }

    #[test]
    fn an_answer_with_another_correlation_id_is_not_kafka() {
        let server = fake_kafka(1);
        assert_eq!(diagnose_with(&server, true, T, system_resolver), Some(Unreachable::NotKafka { server }));
    }

    #[test]
    fn an_unresolvable_host_is_an_unknown_host_naming_it() {
        let cause = diagnose_with("kafka.example.invalid:9092", true, T, no_host).unwrap();
        assert_eq!(cause.to_string(), "cannot resolve kafka.example.invalid: unknown host");
        assert_eq!(cause.as_str(), "unknown_host");
        assert_eq!(diagnose_with("PLAINTEXT://nowhere", true, T, no_addresses), Some(Unreachable::UnknownHost { host: "nowhere".into() }));
    }

    #[test]
    fn a_resolver_that_hangs_is_abandoned_as_a_timeout() {
        let started = Instant::now();
        let cause = diagnose_with("slow.example:9092", true, Duration::from_millis(200), slow_resolver).unwrap();
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        assert_eq!(cause.to_string(), "cannot reach slow.example:9092: timed out after 200ms");
        assert_eq!(cause.as_str(), "timeout");
    }

    #[test]
    fn connect_failures_map_to_a_fixed_set_of_causes() {
        assert_eq!(connect_error("h:1", io::ErrorKind::TimedOut, T).to_string(), "cannot reach h:1: timed out after 2s");
        assert_eq!(connect_error("h:1", io::ErrorKind::ConnectionRefused, T).as_str(), "connection_refused");
        let unreachable = connect_error("h:1", io::ErrorKind::NetworkUnreachable, T);
        assert_eq!(unreachable.to_string(), "cannot reach h:1: network unreachable");
        assert_eq!(connect_error("h:1", io::ErrorKind::Other, T).to_string(), "cannot reach h:1: connection failed");
    }

    #[test]
    fn one_good_bootstrap_server_is_enough_and_otherwise_the_first_servers_cause_is_reported() {
        let refused = format!("127.0.0.1:{}", closed_port());
        let good = fake_kafka(0);
        assert_eq!(diagnose_with(&format!("{refused},{good}"), true, T, system_resolver), None);
        let http = serve(|mut conn| {
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        });
        let both = format!("{http}, {refused}");
        assert_eq!(diagnose_with(&both, true, T, system_resolver), Some(Unreachable::NotKafka { server: http.clone() }));
        let both = format!("{refused},{http}");
        assert_eq!(diagnose_with(&both, true, T, system_resolver), Some(Unreachable::Refused { server: refused }));
    }

    #[test]
    fn without_plaintext_only_the_tcp_connection_is_checked() {
        let secured = BTreeMap::from([("security.protocol".to_string(), "SASL_SSL".to_string())]);
        let plain = BTreeMap::from([("security.protocol".to_string(), "PLAINTEXT".to_string())]);
        assert!(!speaks_plaintext(&secured));
        assert!(speaks_plaintext(&plain));
        assert!(speaks_plaintext(&BTreeMap::new()));
        let http = serve(|mut conn| {
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        });
        assert_eq!(diagnose(&http, &secured, T), None, "a TLS listener would not answer a plaintext probe either");
        assert!(diagnose(&http, &plain, T).is_some());
    }

    #[test]
    fn bootstrap_servers_parse_as_librdkafka_accepts_them() {
        let ok = |s: &str| split_server(s).unwrap();
        assert_eq!(ok("broker:9093"), ("broker:9093".into(), "broker".into()));
        assert_eq!(ok("broker"), ("broker:9092".into(), "broker".into()));
        assert_eq!(ok("SASL_SSL://broker:9094"), ("broker:9094".into(), "broker".into()));
        assert_eq!(ok("[::1]:9093"), ("[::1]:9093".into(), "::1".into()));
        assert_eq!(ok("[::1]"), ("[::1]:9092".into(), "::1".into()));
        for bad in ["broker:port", "broker:70000", ":9092", "::1:9092", "[::1]x"] {
            assert_eq!(split_server(bad), Err(Unreachable::InvalidAddress { server: bad.into() }), "{bad}");
        }
        assert_eq!(diagnose_with(" , ", true, T, system_resolver).map(|c| c.as_str()), Some("invalid_address"));
    }
}
