//! What the example consumers that the `process` actuator (or a test) starts share: a
//! stop flag set by SIGTERM/SIGINT, required environment variables, and a subscribed
//! consumer with manual commits. Not an example itself (cargo builds only
//! `examples/*.rs`).

use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// How long a stop (the last commit, leaving the group) may take before the process
/// exits anyway: with the broker gone those calls can block for good, and a replica
/// whose agent died (it gets SIGTERM from the kernel) has nobody left to SIGKILL it.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// SIGTERM and SIGINT set the stop flag (read with [`stopping`]); a process still alive
/// [`STOP_GRACE`] after the signal exits with status 1.
pub fn on_stop_signals(program: &'static str) {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    std::thread::spawn(move || {
        while !stopping() {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        std::thread::sleep(STOP_GRACE);
        eprintln!("{program}: not stopped {STOP_GRACE:?} after the signal (broker unreachable?): exiting");
        std::process::exit(1)
    });
}

pub fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// The variable `name`, or exit 2 saying which is missing.
pub fn env(program: &str, name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("{program}: {name} is not set");
        std::process::exit(2)
    })
}

/// A consumer of `topic` in `group` (manual commits, from the earliest offset, a 10 s
/// session), or exit 1 saying why.
pub fn subscribed(program: &str, bootstrap: &str, group: &str, topic: &str, client_id: &str) -> BaseConsumer {
    let consumer: BaseConsumer = match ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{program}: {e}");
            std::process::exit(1)
        }
    };
    if let Err(e) = consumer.subscribe(&[topic]) {
        eprintln!("{program}: subscribe: {e}");
        std::process::exit(1)
    }
    consumer
}
