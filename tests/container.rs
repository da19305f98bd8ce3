//! The container image without a Docker engine (none runs on our machines): the files the
//! Dockerfile's build stage COPYs, and only those, are copied into an empty directory
//! laid out as the image's WORKDIR, and cargo must build the binary there; then that
//! binary starts with the config the runtime stage COPYs and answers `/healthz`.
//!
//! Why a debug `cargo build` and not `cargo build --release`: this target directory
//! holds no release artifacts, and a release build of every dependency (librdkafka's C
//! build, thin LTO) takes over ten minutes on our two shared cores. What broke the image
//! (a manifest naming files the build stage does not copy, a module missing) fails the
//! debug build the same way. The target directory is shared, so the dependencies
//! `cargo test` already built are reused and only streamguard itself (and the few
//! dependencies whose features differ without the dev-dependencies) is compiled: about
//! a minute, where `cargo check` had to check every dependency from scratch (three).
//! Cargo copies the copy's binary to `target/debug/streamguard`, the path the other
//! tests run: it is built from the same files, so they run the same program.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// One `COPY` of the Dockerfile: its stage, sources and destination.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Copy {
    /// The `AS` name of the stage, or its index.
    stage: String,
    /// `--from=…`, when it copies from another stage or image.
    from: Option<String>,
    sources: Vec<String>,
    dest: String,
    /// The stage's WORKDIR when the COPY runs.
    workdir: String,
}

/// The COPY instructions of a Dockerfile (line continuations joined). Pure.
fn copies(dockerfile: &str) -> Vec<Copy> {
    let mut out = Vec::new();
    let (mut stage, mut workdir, mut index) = (String::new(), "/".to_string(), 0usize);
    let joined = dockerfile.replace("\\\n", " ");
    for line in joined.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[0].to_ascii_uppercase().as_str() {
            "FROM" => {
                stage = match words.iter().position(|w| w.eq_ignore_ascii_case("as")) {
                    Some(i) => words[i + 1].to_string(),
                    None => index.to_string(),
                };
                index += 1;
                workdir = "/".to_string();
            }
            "WORKDIR" => workdir = words[1].to_string(),
            "COPY" => {
                let from = words.iter().find_map(|w| w.strip_prefix("--from=")).map(str::to_string);
                let args: Vec<String> = words[1..].iter().filter(|w| !w.starts_with("--")).map(|w| w.to_string()).collect();
                let (dest, sources) = args.split_last().expect("COPY needs a destination");
                out.push(Copy { stage: stage.clone(), from, sources: sources.to_vec(), dest: dest.clone(), workdir: workdir.clone() });
            }
            _ => {}
        }
    }
    out
}

/// Copies what one COPY takes from the build context into `root` (the image's `/`).
fn apply(copy: &Copy, context: &Path, root: &Path) {
    let dest = if copy.dest.starts_with('/') { PathBuf::from(&copy.dest) } else { Path::new(&copy.workdir).join(&copy.dest) };
    let dest = root.join(dest.strip_prefix("/").unwrap());
    let into_dir = copy.dest.ends_with('/') || copy.sources.len() > 1;
    for src in &copy.sources {
        let from = context.join(src);
        assert!(from.exists(), "the Dockerfile copies {src}, which does not exist");
        if from.is_dir() {
            // `COPY dir dest` copies the directory's contents into dest.
            copy_tree(&from, &dest);
        } else {
            let to = if into_dir { dest.join(from.file_name().unwrap()) } else { dest.clone() };
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&from, &to).unwrap();
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn the_dockerfile_parser_reads_stages_workdirs_and_continuations() {
    let c = copies("FROM rust AS build\nWORKDIR /src\nCOPY a b \\\n  ./\nFROM debian\nCOPY --from=build /src/x /usr/bin/x\nCOPY c.toml /etc/c.toml\n");
    assert_eq!(c.len(), 3);
    assert_eq!((c[0].stage.as_str(), c[0].sources.clone(), c[0].dest.as_str(), c[0].workdir.as_str()), ("build", vec!["a".to_string(), "b".to_string()], "./", "/src"));
    assert_eq!(c[1].from.as_deref(), Some("build"));
    assert_eq!((c[2].stage.as_str(), c[2].from.clone(), c[2].workdir.as_str()), ("1", None, "/"));
}

#[test]
fn the_image_builds_from_exactly_the_files_the_dockerfile_copies_and_starts_with_its_config() {
    let context = repo_root();
    let dockerfile = std::fs::read_to_string(context.join("Dockerfile")).unwrap();
    let all = copies(&dockerfile);
    let build_stage = all.iter().find(|c| c.from.is_none() && c.sources.iter().any(|s| s == "Cargo.toml")).expect("a COPY of Cargo.toml").stage.clone();
    let root = tempfile::tempdir().unwrap();
    let mut workdir = None;
    for c in all.iter().filter(|c| c.stage == build_stage && c.from.is_none()) {
        apply(c, &context, root.path());
        workdir = Some(c.workdir.clone());
    }
    let src = root.path().join(workdir.unwrap().trim_start_matches('/'));
    assert!(src.join("Cargo.toml").is_file());

    let out = run(Command::new(env!("CARGO"))
        .args(["build", "--locked", "--offline", "--bin", "streamguard", "--message-format=json-render-diagnostics"])
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", context.join("target")));
    assert!(out.status.success(), "cargo build in the build stage's files failed:\n{}", String::from_utf8_lossy(&out.stderr));
    // The binary built from the copy (cargo's own report of the artifact).
    let image_bin = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "streamguard" && m["target"]["kind"][0] == "bin")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no streamguard executable");
    assert!(image_bin.is_file(), "{image_bin:?}");

    // The runtime stage's config, from the build context, at its image path.
    let config = all
        .iter()
        .find(|c| c.stage != build_stage && c.from.is_none() && c.dest == "/etc/streamguard/streamguard.toml")
        .expect("the runtime stage COPYs /etc/streamguard/streamguard.toml");
    apply(config, &context, root.path());
    let cfg = root.path().join("etc/streamguard/streamguard.toml");
    let check = run(Command::new(&image_bin).args(["check", "--config"]).arg(&cfg));
    assert!(check.status.success(), "{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));

    // As the image runs it (STREAMGUARD_CONFIG, STREAMGUARD_LISTEN), on loopback, with
    // the state file moved out of /var/lib.
    let port = free_port();
    let log = root.path().join("agent.log");
    let mut child = Command::new(&image_bin)
        .arg("run")
        .env("STREAMGUARD_CONFIG", &cfg)
        .env("STREAMGUARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("STREAMGUARD_RULES__STATE_FILE", root.path().join("state.json"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let healthy = loop {
        if http_get(port, "/healthz").0 == 200 {
            break true;
        }
        if child.try_wait().unwrap().is_some() || std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(healthy, "the container config does not start:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
}
