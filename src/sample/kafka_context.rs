//! The Kafka admin client's context: what librdkafka tells us outside of request
//! results (log lines and global errors), made safe and useful.
//!
//! - **Secrets**: every line is scrubbed of the cluster's sensitive property values
//!   ([`crate::config::secrets`]) before it is logged or kept.
//! - **Log storms**: lines go through a [`LogLimiter`]: a line whose text (digits
//!   ignored) was already logged in the current window is counted, not printed, and at
//!   most [`LIMIT_PER_WINDOW`] lines are printed per [`LOG_WINDOW`] per cluster; the next
//!   line after a window with suppressed lines is preceded by one summary line per kind
//!   with its count. A broker that was down for ten minutes therefore yields a handful
//!   of lines on recovery, not hundreds.
//! - **Faults**: an authentication or TLS failure is remembered until the next successful
//!   sample ([`ClientEvents::fault`]), so the sampler can say "authentication failed"
//!   instead of the request timeout that librdkafka's retries turn it into (librdkafka
//!   reports a repeated identical failure only once in a while).
//!
//! It decides nothing about sampling; the sampler reads [`ClientEvents`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Length of one rate-limit window.
pub const LOG_WINDOW: Duration = Duration::from_secs(60);
/// Most librdkafka lines printed per window per cluster (summaries not counted).
pub const LIMIT_PER_WINDOW: u32 = 10;
/// Distinct line kinds tracked per window; further kinds are counted together.
const MAX_KINDS: usize = 256;

/// What the limiter says about one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Print the line itself.
    pub emit: bool,
    /// Summaries of the previous window to print first: (an example line, how many like
    /// it were suppressed).
    pub summaries: Vec<(String, u64)>,
}

/// Rate limit and de-duplication of log lines, by window. Pure: time comes in.
#[derive(Debug)]
pub struct LogLimiter {
    window: Duration,
    limit: u32,
    started: Option<Instant>,
    emitted: u32,
    /// Kind → (example line, suppressed count) in the current window.
    kinds: HashMap<String, (String, u64)>,
}

impl LogLimiter {
    pub fn new(window: Duration, limit: u32) -> Self {
        LogLimiter { window, limit, started: None, emitted: 0, kinds: HashMap::new() }
    }

    /// Decides about `line` at `now`.
    pub fn admit(&mut self, line: &str, now: Instant) -> Admission {
        let mut summaries = Vec::new();
        let expired = self.started.is_none_or(|s| now.saturating_duration_since(s) >= self.window);
        if expired {
            summaries = self.flush();
            self.started = Some(now);
        }
        let kind = line_kind(line);
        let full = self.kinds.len() >= MAX_KINDS && !self.kinds.contains_key(&kind);
        let kind = if full { "(other lines)".to_string() } else { kind };
        let seen = self.kinds.contains_key(&kind);
        let emit = !seen && self.emitted < self.limit;
        let entry = self.kinds.entry(kind).or_insert_with(|| (line.to_string(), 0));
        if emit {
            self.emitted += 1;
        } else {
            entry.1 += 1;
        }
        Admission { emit, summaries }
    }

    /// At `now`: if the current window is over, ends it (see [`LogLimiter::flush`]), so
    /// the summary of a quiet tail is not held back until the next line.
    pub fn expire(&mut self, now: Instant) -> Vec<(String, u64)> {
        match self.started {
            Some(s) if now.saturating_duration_since(s) >= self.window => self.flush(),
            _ => Vec::new(),
        }
    }

    /// Ends the window: the suppressed counts, largest first; resets.
    pub fn flush(&mut self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self.kinds.drain().filter(|(_, (_, n))| *n > 0).map(|(_, v)| v).collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        self.emitted = 0;
        self.started = None;
        out
    }
}

/// A line's kind: its text with every run of digits replaced by `#` and parenthesised
/// asides dropped (ports, counts, "(after 3ms in state UP, 2 identical error(s)
/// suppressed)" vary between otherwise identical lines). Pure.
pub fn line_kind(line: &str) -> String {
    let mut out = String::with_capacity(line.len().min(256));
    let mut in_digits = false;
    let mut depth = 0usize;
    for c in line.chars().take(512) {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > 0 || c == ')' {
            continue;
        }
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

/// A failure of the client itself that makes requests time out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    Authentication,
    Tls,
}

impl FaultKind {
    /// Bounded label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            FaultKind::Authentication => "authentication",
            FaultKind::Tls => "tls",
        }
    }
}

/// The latest such failure, scrubbed of secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFault {
    pub kind: FaultKind,
    pub message: String,
}

impl std::fmt::Display for ClientFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            FaultKind::Authentication => write!(f, "authentication failed: {}", self.message),
            FaultKind::Tls => write!(f, "TLS handshake failed: {}", self.message),
        }
    }
}

/// What librdkafka reported for one cluster, shared by the context and the sampler.
#[derive(Debug)]
pub struct ClientEvents {
    cluster: String,
    /// Sensitive property values (scrubbed from every line).
    secrets: Vec<(String, String)>,
    limiter: Mutex<LogLimiter>,
    fault: Mutex<Option<(Instant, ClientFault)>>,
}

impl ClientEvents {
    pub fn new(cluster: &str, config: &rdkafka::config::ClientConfig) -> Arc<Self> {
        // config_map() masks only rdkafka's own short list of keys: read the values.
        let secrets = config
            .config_map()
            .into_keys()
            .filter(|k| crate::config::secrets::is_sensitive(k))
            .filter_map(|k| config.get(k).map(|v| (k.to_string(), v.to_string())))
            .collect();
        Arc::new(ClientEvents {
            cluster: cluster.to_string(),
            secrets,
            limiter: Mutex::new(LogLimiter::new(LOG_WINDOW, LIMIT_PER_WINDOW)),
            fault: Mutex::new(None),
        })
    }

    /// `text` without any secret of this cluster.
    pub fn scrub(&self, text: &str) -> String {
        crate::config::secrets::scrub(text, self.secrets.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The latest authentication or TLS failure since the last successful sample.
    pub fn fault(&self) -> Option<ClientFault> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(_, f)| f.clone())
    }

    /// A sample succeeded: whatever failed before is over.
    pub fn clear_fault(&self) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn record_fault(&self, kind: FaultKind, message: String) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), ClientFault { kind, message }));
    }

    /// Logs the summaries of a window that has ended (called at every sample).
    pub fn tick(&self) {
        let summaries = self.limiter.lock().unwrap_or_else(|p| p.into_inner()).expire(Instant::now());
        self.summarise(&summaries);
    }

    fn summarise(&self, summaries: &[(String, u64)]) {
        for (example, n) in summaries {
            tracing::warn!(target: "librdkafka", cluster = %self.cluster, suppressed = n, window = ?LOG_WINDOW, example = %example, "librdkafka: similar lines suppressed");
        }
    }

    /// Logs one librdkafka line through the limiter.
    fn line(&self, level: tracing::Level, line: &str) {
        let line = self.scrub(line);
        let admission = self.limiter.lock().unwrap_or_else(|p| p.into_inner()).admit(&line, Instant::now());
        self.summarise(&admission.summaries);
        if admission.emit {
            // At most WARN: the agent reports a failed sample itself (SampleFailed, the
            // target's last_error); librdkafka's line is the detail, not a call to act.
            match level {
                tracing::Level::ERROR | tracing::Level::WARN => tracing::warn!(target: "librdkafka", cluster = %self.cluster, "librdkafka: {line}"),
                tracing::Level::INFO => tracing::info!(target: "librdkafka", cluster = %self.cluster, "librdkafka: {line}"),
                _ => tracing::debug!(target: "librdkafka", cluster = %self.cluster, "librdkafka: {line}"),
            }
        }
    }
}

impl Drop for ClientEvents {
    fn drop(&mut self) {
        for (example, n) in self.limiter.get_mut().unwrap_or_else(|p| p.into_inner()).flush() {
            tracing::warn!(target: "librdkafka", cluster = %self.cluster, suppressed = n, example = %example, "librdkafka: similar lines suppressed");
        }
    }
}

/// The admin client's context.
#[derive(Debug, Clone)]
pub struct KafkaContext {
    pub events: Arc<ClientEvents>,
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let level = match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => tracing::Level::ERROR,
            RDKafkaLogLevel::Warning => tracing::Level::WARN,
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::Level::INFO,
            RDKafkaLogLevel::Debug => tracing::Level::DEBUG,
        };
        self.events.line(level, &format!("{fac} {message}"));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let kind = match code {
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => Some(FaultKind::Authentication),
            Some(RDKafkaErrorCode::SSL) => Some(FaultKind::Tls),
            _ => None,
        };
        if let Some(kind) = kind {
            self.events.record_fault(kind, self.events.scrub(reason));
        }
        self.events.line(tracing::Level::ERROR, &format!("{error}: {reason}"));
    }
}

/// Most events handled per [`drain_main_queue`] call (a bound on the time it takes).
const MAX_DRAINED: usize = 10_000;

/// Delivers the log lines and errors waiting on a client's main queue to `ctx`.
///
/// rdkafka routes librdkafka's log lines and global errors (authentication, broker
/// down) to the client's main queue, which only a consumer's or producer's `poll` serves:
/// an admin client's queue would grow for as long as it lives and its errors would never
/// be seen. The sampler calls this before it reads [`ClientEvents::fault`] and at
/// every sample. Never blocks (zero timeout). Returns how many events it handled.
///
/// # Safety
/// `rk` must be a live client handle for the whole call.
pub unsafe fn drain_main_queue(rk: *mut rd::rd_kafka_t, ctx: &KafkaContext) -> usize {
    // SAFETY: rk is live (caller); the main queue reference is ours and destroyed below.
    let queue = unsafe { rd::rd_kafka_queue_get_main(rk) };
    if queue.is_null() {
        return 0;
    }
    let mut n = 0;
    while n < MAX_DRAINED {
        // SAFETY: queue is a live queue reference; a zero timeout never blocks.
        let ev = unsafe { rd::rd_kafka_queue_poll(queue, 0) };
        if ev.is_null() {
            break;
        }
        n += 1;
        // SAFETY: ev is a live event until rd_kafka_event_destroy below; the strings it
        // returns are copied before that.
        unsafe {
            match rd::rd_kafka_event_type(ev) {
                rd::RD_KAFKA_EVENT_LOG => {
                    let (mut fac, mut text, mut level) = (std::ptr::null(), std::ptr::null(), 0);
                    if rd::rd_kafka_event_log(ev, &mut fac, &mut text, &mut level) == 0 {
                        let (fac, text) = (cstr(fac), cstr(text));
                        ctx.log(log_level(level), &fac, &text);
                    }
                }
                rd::RD_KAFKA_EVENT_ERROR => {
                    let code = RDKafkaErrorCode::from(rd::rd_kafka_event_error(ev));
                    let reason = cstr(rd::rd_kafka_event_error_string(ev));
                    ctx.error(KafkaError::Global(code), &reason);
                }
                _ => {}
            }
            rd::rd_kafka_event_destroy(ev);
        }
    }
    // SAFETY: the reference taken above, destroyed once.
    unsafe { rd::rd_kafka_queue_destroy(queue) };
    ctx.events.tick();
    n
}

/// # Safety
/// `p` is null or a NUL-terminated string alive for the call.
unsafe fn cstr(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: see the function's contract.
        unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// syslog levels, as librdkafka uses them.
fn log_level(level: i32) -> RDKafkaLogLevel {
    match level {
        ..=0 => RDKafkaLogLevel::Emerg,
        1 => RDKafkaLogLevel::Alert,
        2 => RDKafkaLogLevel::Critical,
        3 => RDKafkaLogLevel::Error,
        4 => RDKafkaLogLevel::Warning,
        5 => RDKafkaLogLevel::Notice,
        6 => RDKafkaLogLevel::Info,
        _ => RDKafkaLogLevel::Debug,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, secs: u64) -> Instant {
        base + Duration::from_secs(secs)
    }

    #[test]
    fn a_repeated_line_is_printed_once_per_window_and_summarised_with_its_count() {
        let t = Instant::now();
        let mut l = LogLimiter::new(Duration::from_secs(60), 10);
        assert!(l.admit("Connect to 127.0.0.1:9092 failed (after 1ms)", t).emit);
        for i in 0..375 {
            let a = l.admit(&format!("Connect to 127.0.0.1:9092 failed (after {i}ms)"), at(t, 1));
            assert!(!a.emit && a.summaries.is_empty());
        }
        let a = l.admit("all brokers are down", at(t, 61));
        assert!(a.emit, "a new window prints again");
        assert_eq!(a.summaries, vec![("Connect to 127.0.0.1:9092 failed (after 1ms)".to_string(), 375)]);
    }

    #[test]
    fn a_window_that_ended_quietly_is_summarised_at_the_next_tick() {
        let t = Instant::now();
        let mut l = LogLimiter::new(Duration::from_secs(60), 10);
        l.admit("down", t);
        l.admit("down", t);
        assert!(l.expire(at(t, 59)).is_empty());
        assert_eq!(l.expire(at(t, 60)), vec![("down".to_string(), 1)]);
        assert!(l.expire(at(t, 200)).is_empty(), "nothing twice");
        assert!(l.admit("down", at(t, 201)).emit, "a new window prints the line again");
    }

    #[test]
    fn distinct_lines_are_capped_per_window() {
        let t = Instant::now();
        let mut l = LogLimiter::new(Duration::from_secs(60), 3);
        let emitted = (0..100).filter(|i| l.admit(&format!("line {}", char::from(b'a' + (*i % 26) as u8)), t).emit).count();
        assert_eq!(emitted, 3);
        let s = l.flush();
        assert_eq!(s.iter().map(|(_, n)| n).sum::<u64>(), 97, "every suppressed line is counted");
    }

    #[test]
    fn the_number_of_kinds_is_bounded() {
        let t = Instant::now();
        let mut l = LogLimiter::new(Duration::from_secs(60), 1);
        for i in 0..10_000 {
            l.admit(&format!("unique line {}", "x".repeat(i % 1000) + &i.to_string()), t);
        }
        assert!(l.kinds.len() <= MAX_KINDS + 1, "{}", l.kinds.len());
    }

    #[test]
    fn digits_do_not_make_lines_different() {
        assert_eq!(line_kind("after 12ms, 3 brokers"), line_kind("after 999ms, 1 brokers"));
        assert_ne!(line_kind("broker down"), line_kind("broker up"));
        assert_eq!(line_kind("failed (after 3ms in state UP)"), line_kind("failed (after 9ms in state UP, 1 identical error(s) suppressed)"));
    }

    #[test]
    fn an_authentication_error_is_kept_as_a_fault_without_the_password() {
        let mut cfg = rdkafka::config::ClientConfig::new();
        cfg.set("sasl.password", "pw-123");
        let ctx = KafkaContext { events: ClientEvents::new("c", &cfg) };
        ctx.error(KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure), "broker down");
        assert!(ctx.events.fault().is_none(), "only authentication and TLS failures are faults");
        ctx.error(KafkaError::Global(RDKafkaErrorCode::Authentication), "SASL authentication error: bad pw-123");
        let f = ctx.events.fault().unwrap();
        assert_eq!(f.kind, FaultKind::Authentication);
        assert_eq!(f.to_string(), "authentication failed: SASL authentication error: bad <redacted>");
        ctx.events.clear_fault();
        assert!(ctx.events.fault().is_none());
    }
}
