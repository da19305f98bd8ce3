//! A private Kafka broker for tests that stop, pause or restart one: the same `stack/`
//! scripts with a run directory and ports of its own, so nothing they do disturbs the
//! shared stack or another test. Its ports are picked outside the kernel's ephemeral
//! range (services never live there), including the SASL_SSL and MTLS listeners `stack/`
//! gives every broker.

use std::process::Command;

use super::{repo_root, run};

/// A free port for a service: outside the ephemeral range (32768–60999 on Linux), so a
/// client's outgoing connection can never be handed the port a broker is about to bind.
pub fn free_service_port() -> u16 {
    use std::net::TcpListener;
    // Spread over 20000–32000 from a per-process, per-call seed; a bound port is skipped.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919).wrapping_add(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed).wrapping_mul(104_729));
    for i in 0..12_000u32 {
        let port = 20_000 + ((seed.wrapping_add(i.wrapping_mul(7))) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-32000");
}

pub struct PrivateBroker {
    dir: tempfile::TempDir,
    pub port: u16,
    controller_port: u16,
    sasl_port: u16,
    mtls_port: u16,
    /// (the broker's proxied listener, the port it advertises there): see
    /// [`PrivateBroker::behind_proxy`].
    proxied: Option<(u16, u16)>,
}

impl PrivateBroker {
    /// A broker not started yet (see [`PrivateBroker::up`]).
    pub fn new() -> Self {
        PrivateBroker { dir: tempfile::tempdir().unwrap(), port: free_service_port(), controller_port: free_service_port(), sasl_port: free_service_port(), mtls_port: free_service_port(), proxied: None }
    }

    /// A started broker with one more plaintext listener, on [`PrivateBroker::proxied_port`],
    /// that advertises itself as `127.0.0.1:advertised`: a proxy listening there and
    /// forwarding to that listener sees every request of a client bootstrapped at it.
    pub fn behind_proxy(advertised: u16) -> Self {
        let mut b = PrivateBroker::new();
        b.proxied = Some((free_service_port(), advertised));
        b.up();
        b
    }

    /// The listener a proxy forwards to (see [`PrivateBroker::behind_proxy`]).
    pub fn proxied_port(&self) -> u16 {
        self.proxied.expect("started with behind_proxy").0
    }

    /// A started broker.
    pub fn start() -> Self {
        let b = PrivateBroker::new();
        b.up();
        b
    }

    fn stack(&self, verb: &str) -> Command {
        let mut c = Command::new(repo_root().join("stack").join(verb));
        c.arg("kafka")
            .env("STACK_DIR", self.dir.path())
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", self.controller_port.to_string())
            .env("KAFKA_SASL_SSL_PORT", self.sasl_port.to_string())
            .env("KAFKA_MTLS_PORT", self.mtls_port.to_string());
        if let Some((listener, advertised)) = self.proxied {
            c.env("KAFKA_PROXY_PORT", listener.to_string()).env("KAFKA_PROXY_ADVERTISED_PORT", advertised.to_string());
        }
        c
    }

    fn must(&self, verb: &str) {
        let out = run(&mut self.stack(verb));
        assert!(out.status.success(), "stack/{verb} kafka failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }

    /// Starts (or restarts) the broker and waits until it is ready.
    pub fn up(&self) {
        self.must("up");
    }

    /// Stops the broker.
    pub fn down(&self) {
        self.must("down");
    }

    pub fn pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.path().join("kafka/kafka.pid")).expect("private broker pid file").trim().parse().expect("pid")
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        // A paused JVM ignores SIGTERM until continued: resume it first.
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("kafka/kafka.pid")) {
            let _ = Command::new("kill").args(["-CONT", pid.trim()]).status();
        }
        let _ = self.stack("down").output();
    }
}

/// SIGSTOPs a process for its lifetime; SIGCONT on drop, also when the test panics.
pub struct Paused(pub u32);

impl Paused {
    pub fn new(pid: u32) -> Self {
        let ok = Command::new("kill").args(["-STOP", &pid.to_string()]).status().unwrap().success();
        assert!(ok, "SIGSTOP {pid}");
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}
