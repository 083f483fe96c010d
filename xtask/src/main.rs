//! `cargo xtask`: project automation for resnet-rs.
//!
//! - `cargo xtask ci`: formatting, dependency licences and sources (`cargo deny`, installed if
//!   missing), clippy with warnings denied, the tests, a quick property run and a quick
//!   benchmark.
//! - `cargo xtask deny`: just the `cargo deny` checks.
//! - `cargo xtask props [--cases N]`: every SIMD kernel against its naive twin, N random cases
//!   per property (default 1000) plus the fixed awkward shapes.
//! - `cargo xtask bench [OPTIONS]`: the benchmark report (release build); options are those of
//!   `resnet-bench --help` (`--quick`, `--models`, `--batch`, `--threads`, `--iters`,
//!   `--weights`, `--json`, `--plot`, `--ort`).
//! - `cargo xtask fuzz [--seconds N] [--target T]`: the cargo-fuzz targets in `fuzz/` for N
//!   seconds each (default 60), corpora seeded from `fuzz/seeds/`; installs cargo-fuzz if it is
//!   missing. A crash input is copied to `fuzz/regressions/<target>/`, which the test suite
//!   replays. Where cargo-fuzz cannot build, it says why and runs the proptest byte mutator of
//!   `crates/resnet-cli/tests/hostile.rs` over the same entry points instead.
//! - `cargo xtask memcheck`: the test binaries of resnet-kernels and resnet-tensor under
//!   valgrind memcheck.
//! - `cargo xtask degradation [--quick] [--report-only] [OPTIONS]`: He et al.'s degradation
//!   study (plain-20/56, ResNet-20/56, plain-56 with an identity prior) trained with
//!   `resnet train`, and its report `docs/degradation.md` + `.svg` (`--quick`: a small run
//!   reported in `target/degradation-quick`); see `degradation.rs`.

#![forbid(unsafe_code)]

mod degradation;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const FUZZ_TARGETS: [&str; 4] = [
    "weights_file",
    "torch_checkpoint",
    "tensor_bytes",
    "image_preprocess",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(env!("CARGO"))
        .args(args)
        .envs(env.iter().copied())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed ({status})", args.join(" ")))
    }
}

fn props(args: &[String]) -> Result<(), String> {
    let cases = match args {
        [] => "1000".to_string(),
        [flag, n] if flag == "--cases" => {
            n.parse::<u32>()
                .map_err(|_| format!("--cases takes a number, got {n:?}"))?;
            n.clone()
        }
        _ => return Err("usage: cargo xtask props [--cases N]".into()),
    };
    cargo(
        &[
            "test",
            "--release",
            "-p",
            "resnet-kernels",
            "--test",
            "props",
            "--test",
            "grad_props",
            "--test",
            "bf16_props",
        ],
        &[("RESNET_PROPS_CASES", &cases)],
    )
}

fn bench(args: &[String]) -> Result<(), String> {
    let mut a = vec![
        "run",
        "--release",
        "--quiet",
        "-p",
        "resnet-benches",
        "--bin",
        "resnet-bench",
        "--",
    ];
    a.extend(args.iter().map(String::as_str));
    cargo(&a, &[])
}

fn fuzz(args: &[String]) -> Result<(), String> {
    let mut seconds = 60u64;
    let mut targets: Vec<String> = FUZZ_TARGETS.iter().map(|t| t.to_string()).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--seconds", Some(n)) => {
                seconds = n
                    .parse()
                    .map_err(|_| format!("--seconds takes a number, got {n:?}"))?
            }
            ("--target", Some(t)) if FUZZ_TARGETS.contains(&t.as_str()) => {
                targets = vec![t.clone()]
            }
            ("--target", Some(t)) => {
                return Err(format!(
                    "unknown target {t:?}; targets: {}",
                    FUZZ_TARGETS.join(", ")
                ));
            }
            _ => return Err("usage: cargo xtask fuzz [--seconds N] [--target T]".into()),
        }
    }
    let fuzz_dir = root().join("fuzz");
    ensure_cargo_tool("fuzz", &["cargo-fuzz"])?;
    // cargo-fuzz passes -Z flags (sanitizers, coverage); RUSTC_BOOTSTRAP lets the stable
    // toolchain accept them.
    let env = [("RUSTC_BOOTSTRAP", "1")];
    let build = Command::new(env!("CARGO"))
        .args(["fuzz", "build"])
        .current_dir(&fuzz_dir)
        .envs(env)
        .output()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    if !build.status.success() {
        let why = String::from_utf8_lossy(&build.stderr);
        let why = why
            .lines()
            .filter(|l| l.contains("error"))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n");
        eprintln!(
            "cargo fuzz cannot build here:\n{why}\nfalling back to the proptest byte mutator"
        );
        let cases = (seconds * 2000).to_string();
        return cargo(
            &["test", "--release", "-p", "resnet-cli", "--test", "hostile"],
            &[("RESNET_FUZZ_CASES", &cases)],
        );
    }
    let mut summary = Vec::new();
    for t in &targets {
        let corpus = fuzz_dir.join("corpus").join(t);
        std::fs::create_dir_all(&corpus).map_err(|e| e.to_string())?;
        for seed in std::fs::read_dir(fuzz_dir.join("seeds").join(t)).map_err(|e| e.to_string())? {
            let seed = seed.map_err(|e| e.to_string())?.path();
            if let Some(name) = seed.file_name() {
                std::fs::copy(&seed, corpus.join(name)).map_err(|e| e.to_string())?;
            }
        }
        eprintln!("$ cargo fuzz run {t} ({seconds} s)");
        let started = std::time::Instant::now();
        let out = Command::new(env!("CARGO"))
            .args(["fuzz", "run", t])
            .arg(&corpus)
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-rss_limit_mb=4096",
                "-malloc_limit_mb=2048",
                "-print_final_stats=1",
            ])
            .current_dir(&fuzz_dir)
            .envs(env)
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let runs = log
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .map_or("?".to_string(), |v| v.trim().to_string());
        summary.push(format!(
            "{t}: {runs} executions in {:.0} s, {}",
            started.elapsed().as_secs_f64(),
            if out.status.success() {
                "no crash"
            } else {
                "CRASH"
            }
        ));
        if !out.status.success() {
            eprintln!(
                "{}",
                log.lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            // Keep the crash inputs as regression tests.
            let artifacts = fuzz_dir.join("artifacts").join(t);
            let keep = fuzz_dir.join("regressions").join(t);
            std::fs::create_dir_all(&keep).map_err(|e| e.to_string())?;
            if let Ok(rd) = std::fs::read_dir(&artifacts) {
                for a in rd.flatten() {
                    let _ = std::fs::copy(a.path(), keep.join(a.file_name()));
                }
            }
        }
    }
    for line in &summary {
        println!("{line}");
    }
    if summary.iter().any(|l| l.ends_with("CRASH")) {
        return Err("fuzzing found a crash; its input is in fuzz/regressions/".into());
    }
    Ok(())
}

fn memcheck() -> Result<(), String> {
    // Build the test binaries and find their paths from cargo's JSON messages.
    let out = Command::new(env!("CARGO"))
        .args([
            "test",
            "--no-run",
            "--message-format=json",
            "-p",
            "resnet-kernels",
            "-p",
            "resnet-tensor",
        ])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err("building the test binaries failed".into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let bins: Vec<String> = text
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\"") && l.contains("\"test\":true"))
        .filter_map(|l| {
            l.split("\"executable\":\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_string)
        })
        .collect();
    if bins.is_empty() {
        return Err("no test binaries found".into());
    }
    for bin in bins {
        eprintln!("$ valgrind {bin}");
        let status = Command::new("valgrind")
            .args([
                "--tool=memcheck",
                "--error-exitcode=1",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite",
                "-q",
                &bin,
            ])
            .args(["--test-threads=1"])
            .env("RESNET_PROPS_CASES", "16")
            .env("PROPTEST_CASES", "16")
            .status()
            .map_err(|e| format!("cannot run valgrind (is it installed?): {e}"))?;
        if !status.success() {
            return Err(format!("valgrind reported errors in {bin}"));
        }
    }
    Ok(())
}

/// Whether `program ARGS... --version` runs.
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Make sure the cargo subcommand `sub` exists, installing it (`cargo install INSTALL...`) if
/// not.
fn ensure_cargo_tool(sub: &str, install: &[&str]) -> Result<(), String> {
    if !runs(env!("CARGO"), &[sub]) {
        eprintln!("cargo {sub} is missing: installing it");
        let mut args = vec!["install"];
        args.extend_from_slice(install);
        cargo(&args, &[])?;
    }
    Ok(())
}

/// The kernel tests on aarch64 (NEON and scalar paths) under qemu user-mode emulation. Installs
/// the Rust target and, with apt as root, qemu and the cross linker; where they cannot be had,
/// says so and skips (the tests themselves failing is an error).
fn aarch64() -> Result<(), String> {
    const TARGET: &str = "aarch64-unknown-linux-gnu";
    let skip = |why: &str| {
        eprintln!("xtask aarch64: skipped, {why}");
        Ok(())
    };
    let rustup_ok = Command::new("rustup")
        .args(["target", "add", TARGET])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !rustup_ok {
        return skip("rustup cannot add the aarch64 target");
    }
    let tools = ["qemu-aarch64", "aarch64-linux-gnu-gcc"];
    // Install from the package lists as they are, and once more after refreshing them.
    for refresh in [false, true] {
        if tools.iter().all(|t| runs(t, &[])) || !runs("apt-get", &[]) {
            break;
        }
        eprintln!("installing qemu-user and the aarch64 cross linker with apt-get");
        if refresh {
            let _ = Command::new("apt-get")
                .args(["update", "-q"])
                .stdout(Stdio::null())
                .status();
        }
        let _ = Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "qemu-user", "gcc-aarch64-linux-gnu"])
            .args(["libc6-dev-arm64-cross"])
            .stdout(Stdio::null())
            .status();
    }
    if !tools.iter().all(|t| runs(t, &[])) {
        return skip("qemu-aarch64 or aarch64-linux-gnu-gcc is missing");
    }
    cargo(
        &["test", "--target", TARGET, "-p", "resnet-kernels"],
        &[
            ("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER", tools[1]),
            (
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER",
                "qemu-aarch64 -L /usr/aarch64-linux-gnu",
            ),
        ],
    )
}

fn deny() -> Result<(), String> {
    ensure_cargo_tool("deny", &["--locked", "cargo-deny"])?;
    // Licences, bans and sources need no network; advisories would fetch the RustSec database.
    cargo(&["deny", "check", "licenses", "bans", "sources"], &[])
}

fn ci() -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    deny()?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo(&["test", "--workspace"], &[])?;
    cargo(
        &["test", "-p", "resnet-image", "--no-default-features"],
        &[],
    )?;
    aarch64()?;
    props(&["--cases".into(), "200".into()])?;
    bench(&["--quick".into()])
}

const USAGE: &str = "usage: cargo xtask <ci | props [--cases N] | bench [OPTIONS] | fuzz [--seconds N] [--target T] | memcheck | deny | aarch64 | degradation [OPTIONS]>
       (cargo xtask degradation --help for its options)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("props") => props(rest),
        Some("bench") => bench(rest),
        Some("fuzz") => fuzz(rest),
        Some("memcheck") => memcheck(),
        Some("deny") => deny(),
        Some("aarch64") => aarch64(),
        Some("degradation") => degradation::run(rest),
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown task {other:?}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
