//! SIGTERM stops a real `streamguard run` within the documented grace (10 s) even while a
//! Kafka sample is blocked for its 30 s `sample_timeout` on a broker that does not answer,
//! and the log says what was cut short. Two unreachable brokers: a port with nothing
//! listening, and the stack's own broker's protocol spoken by a process that is stopped
//! (a listening socket whose owner never reads: SIGSTOP, resumed by a drop guard).

mod common;

use std::net::TcpListener;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;

/// The documented shutdown grace (README "Operations", agent::SHUTDOWN_GRACE).
const GRACE: Duration = Duration::from_secs(10);

fn config(port: u16, bootstrap: &str) -> String {
    config_on(port, bootstrap, "auto")
}

/// `sampler`: which Kafka client samples (the direct client fails at once on a refused
/// connection; librdkafka keeps retrying it until the sample's timeout).
fn config_on(port: u16, bootstrap: &str, sampler: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:{port}"
sample_interval = "60s"
sample_timeout = "30s"

[[clusters]]
name = "unreachable"
bootstrap_servers = "{bootstrap}"
sampler = "{sampler}"
"#
    )
}

fn sigterm(child: &Child) {
    let out = run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    assert!(out.status.success());
}

/// Sends SIGTERM while a sample is in flight; returns how long the exit took.
fn stop_during_a_blocked_sample(agent: &mut Agent) -> Duration {
    // The first sample starts at once and blocks for up to 30 s.
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    sigterm(&agent.child);
    loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status:?}:\n{}", agent.log());
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(40), "still running 40 s after SIGTERM:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_during_a_sample_of_a_port_with_nothing_listening_exits_within_the_grace() {
    let dead = free_port();
    let port = free_port();
    // librdkafka retries a refused connection until the sample's timeout: the sample
    // is still blocked at SIGTERM.
    let mut agent = Agent::start_with(port, &config_on(port, &format!("127.0.0.1:{dead}"), "librdkafka"));
    let took = stop_during_a_blocked_sample(&mut agent);
    let log = agent.log();
    assert!(took < GRACE, "exit took {took:?} (grace {GRACE:?}):\n{log}");
    assert!(log.contains("cut short") && log.contains("sample kafka unreachable"), "the log names what was cut short:\n{log}");
    // The direct client fails such a sample at once (connection refused): nothing to cut
    // short, and the exit is as quick.
    let port = free_port();
    let mut agent = Agent::start_with(port, &config_on(port, &format!("127.0.0.1:{dead}"), "direct"));
    let took = stop_during_a_blocked_sample(&mut agent);
    let log = agent.log();
    assert!(took < GRACE, "exit took {took:?} (grace {GRACE:?}):\n{log}");
    assert!(log.contains("Connection refused"), "the direct sample failed on the refused connection:\n{log}");
}

/// Resumes (then ends and reaps) a stopped process, whatever happens to the test.
struct Resume(Child);

impl Drop for Resume {
    fn drop(&mut self) {
        if let Err(e) = Command::new("kill").args(["-CONT", &self.0.id().to_string()]).status() {
            eprintln!("kill -CONT {}: {e}", self.0.id());
        }
        if let Err(e) = self.0.kill() {
            eprintln!("kill {}: {e}", self.0.id());
        }
        if let Err(e) = self.0.wait() {
            eprintln!("wait {}: {e}", self.0.id());
        }
    }
}

#[test]
fn sigterm_during_a_sample_of_a_stopped_listener_exits_within_the_grace() {
    // A child process holds a listening socket and is then stopped: connections are
    // accepted by the kernel and never answered, like a SIGSTOPped broker.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut holder = Command::new("python3")
        .args(["-c", &format!("import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('127.0.0.1',{}))\ns.listen(64)\nprint('ok',flush=True)\ntime.sleep(600)", addr.port())])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let pid = holder.id();
    let stdout = holder.stdout.take().unwrap();
    let _resume = Resume(holder);
    let mut out = std::io::BufReader::new(stdout);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "ok");
    assert!(run(Command::new("kill").args(["-STOP", &pid.to_string()])).status.success());

    let port = free_port();
    let mut agent = Agent::start_with(port, &config(port, &addr.to_string()));
    let took = stop_during_a_blocked_sample(&mut agent);
    let log = agent.log();
    assert!(took < GRACE, "exit took {took:?} (grace {GRACE:?}):\n{log}");
    assert!(log.contains("cut short"), "{log}");
}
