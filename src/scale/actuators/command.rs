//! The `command` actuator: any program scales the target. It receives the
//! [`ScaleRequest`] as JSON on stdin and as environment variables
//! (`STREAMGUARD_TARGET`, `STREAMGUARD_REPLICAS`, `STREAMGUARD_FROM_REPLICAS` (empty when
//! unknown), `STREAMGUARD_POLICY`, `STREAMGUARD_WHY`, `STREAMGUARD_DRY_RUN` = `true`/`false`);
//! exit code 0 is success, anything else a failure carrying the tail of its stderr.
//!
//! An optional `current_command` prints the current count on stdout (one integer);
//! without it the current count is unknown.
//!
//! # Guarantees
//! - Each run is killed after `timeout` ([`ActuatorError::Timeout`]); stdout and stderr
//!   are read only up to [`MAX_OUTPUT`] bytes each, so a chatty program cannot exhaust
//!   memory.
//! - The program is run directly (no shell), with `kill_on_drop`, so a cancelled call
//!   leaves no process behind.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{tail_text, Actuator, ActuatorError, BoxFuture, ScaleOutcome, ScaleRequest};

/// Bytes of stdout/stderr kept per run.
pub const MAX_OUTPUT: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct CommandConfig {
    /// Program and arguments.
    pub command: Vec<String>,
    pub current_command: Option<Vec<String>>,
    pub timeout: Duration,
    /// The scaling target's name (`STREAMGUARD_TARGET` of `current_command`).
    pub target: String,
}

#[derive(Debug, Clone)]
pub struct CommandActuator {
    cfg: CommandConfig,
}

/// Reads at most `MAX_OUTPUT` bytes, then drains (and drops) the rest so the child never
/// blocks on a full pipe.
async fn read_bounded<R: AsyncRead + Unpin>(mut r: R) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

struct RunOutput {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: std::process::ExitStatus,
}

impl CommandActuator {
    pub fn new(cfg: CommandConfig) -> Result<CommandActuator, ActuatorError> {
        if cfg.command.is_empty() {
            return Err(ActuatorError::Config("command: must name a program".to_string()));
        }
        Ok(CommandActuator { cfg })
    }

    async fn run(&self, argv: &[String], stdin: Vec<u8>, env: &[(&str, String)]) -> Result<RunOutput, ActuatorError> {
        let program = argv.first().cloned().unwrap_or_default();
        let mut cmd = Command::new(&program);
        cmd.args(&argv[1..]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| ActuatorError::Spawn { program: program.clone(), message: e.to_string() })?;
        let stdin_pipe = child.stdin.take();
        let out = child.stdout.take();
        let err = child.stderr.take();
        let work = async move {
            let write = async move {
                if let Some(mut p) = stdin_pipe {
                    // A program that ignores stdin closes it early: not an error.
                    if p.write_all(&stdin).await.is_ok() {
                        p.shutdown().await.ok();
                    }
                }
            };
            let read_out = async move {
                match out {
                    Some(o) => read_bounded(o).await,
                    None => Vec::new(),
                }
            };
            let read_err = async move {
                match err {
                    Some(e) => read_bounded(e).await,
                    None => Vec::new(),
                }
            };
            let ((), stdout, stderr, status) = tokio::join!(write, read_out, read_err, child.wait());
            (stdout, stderr, status)
        };
        match tokio::time::timeout(self.cfg.timeout, work).await {
            Err(_) => Err(ActuatorError::Timeout { what: program, secs: self.cfg.timeout.as_secs_f64() }),
            Ok((_, _, Err(e))) => Err(ActuatorError::Spawn { program, message: e.to_string() }),
            Ok((stdout, stderr, Ok(status))) => Ok(RunOutput { stdout, stderr, status }),
        }
    }

    fn failure(program: &str, o: &RunOutput) -> ActuatorError {
        let tail = tail_text(&o.stderr, 512);
        let stderr = if tail.is_empty() { String::new() } else { format!(": {tail}") };
        ActuatorError::Failed { program: program.to_string(), status: o.status.to_string(), stderr }
    }
}

impl Actuator for CommandActuator {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn current(&self) -> BoxFuture<'_, Result<Option<u32>, ActuatorError>> {
        Box::pin(async move {
            let Some(argv) = &self.cfg.current_command else { return Ok(None) };
            let o = self.run(argv, Vec::new(), &[("STREAMGUARD_TARGET", self.cfg.target.clone())]).await?;
            if !o.status.success() {
                return Err(Self::failure(&argv[0], &o));
            }
            let text = String::from_utf8_lossy(&o.stdout);
            text.trim().parse::<u32>().map(Some).map_err(|_| ActuatorError::Decode { what: argv[0].clone(), message: format!("expected a replica count on stdout, got {:?}", tail_text(text.as_bytes(), 80)) })
        })
    }

    fn scale_to<'a>(&'a self, req: &'a ScaleRequest) -> BoxFuture<'a, Result<ScaleOutcome, ActuatorError>> {
        Box::pin(async move {
            let json = serde_json::to_vec(req).map_err(|e| ActuatorError::Config(e.to_string()))?;
            let env = [
                ("STREAMGUARD_TARGET", req.target.clone()),
                ("STREAMGUARD_REPLICAS", req.to.to_string()),
                ("STREAMGUARD_FROM_REPLICAS", req.from.map(|f| f.to_string()).unwrap_or_default()),
                ("STREAMGUARD_POLICY", req.policy.clone()),
                ("STREAMGUARD_WHY", req.why.clone()),
                ("STREAMGUARD_DRY_RUN", req.dry_run.to_string()),
            ];
            let o = self.run(&self.cfg.command, json, &env).await?;
            if !o.status.success() {
                return Err(Self::failure(&self.cfg.command[0], &o));
            }
            if req.from == Some(req.to) {
                return Ok(ScaleOutcome::Unchanged { replicas: req.to });
            }
            Ok(ScaleOutcome::Scaled { from: req.from, to: req.to })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration) -> CommandActuator {
        CommandActuator::new(CommandConfig { command: vec!["sh".into(), "-c".into(), script.into()], current_command: None, timeout, target: "t".into() }).unwrap()
    }

    fn req(to: u32) -> ScaleRequest {
        ScaleRequest { target: "orders".into(), from: Some(1), to, policy: "throughput".into(), why: "1 → 3: because".into(), dry_run: false }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn the_program_gets_the_decision_on_stdin_and_in_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got");
        let script = format!("cat > {0}.json; echo \"$STREAMGUARD_TARGET $STREAMGUARD_REPLICAS $STREAMGUARD_FROM_REPLICAS $STREAMGUARD_DRY_RUN\" > {0}.env", out.display());
        let r = rt().block_on(sh(&script, Duration::from_secs(10)).scale_to(&req(3))).unwrap();
        assert_eq!(r, ScaleOutcome::Scaled { from: Some(1), to: 3 });
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap()).unwrap();
        assert_eq!(json["to"], 3);
        assert_eq!(json["why"], "1 → 3: because");
        assert_eq!(std::fs::read_to_string(out.with_extension("env")).unwrap().trim(), "orders 3 1 false");
    }

    #[test]
    fn a_non_zero_exit_is_a_failure_with_the_stderr_tail() {
        let e = rt().block_on(sh("echo 'quota exceeded' >&2; exit 3", Duration::from_secs(10)).scale_to(&req(3))).unwrap_err();
        assert_eq!(e.kind(), "failed");
        assert!(e.to_string().contains("exit status: 3") && e.to_string().ends_with("quota exceeded"), "{e}");
    }

    #[test]
    fn a_hanging_program_times_out() {
        let e = rt().block_on(sh("sleep 30", Duration::from_millis(300)).scale_to(&req(3))).unwrap_err();
        assert_eq!(e.kind(), "timeout", "{e}");
    }

    #[test]
    fn a_missing_program_cannot_start() {
        let a = CommandActuator::new(CommandConfig { command: vec!["/nonexistent/scaler".into()], current_command: None, timeout: Duration::from_secs(5), target: "t".into() }).unwrap();
        assert_eq!(rt().block_on(a.scale_to(&req(2))).unwrap_err().kind(), "spawn");
    }

    #[test]
    fn current_is_unknown_without_a_current_command_and_parsed_with_one() {
        assert_eq!(rt().block_on(sh("true", Duration::from_secs(5)).current()).unwrap(), None);
        let mut a = sh("true", Duration::from_secs(5));
        a.cfg.current_command = Some(vec!["sh".into(), "-c".into(), "echo 4".into()]);
        assert_eq!(rt().block_on(a.current()).unwrap(), Some(4));
        a.cfg.current_command = Some(vec!["sh".into(), "-c".into(), "echo many".into()]);
        assert_eq!(rt().block_on(a.current()).unwrap_err().kind(), "decode");
    }

    #[test]
    fn output_is_bounded() {
        let r = rt().block_on(async { sh("head -c 1000000 /dev/zero", Duration::from_secs(10)).run(&["sh".into(), "-c".into(), "head -c 1000000 /dev/zero".into()], Vec::new(), &[]).await.unwrap() });
        assert_eq!(r.stdout.len(), MAX_OUTPUT);
    }
}
