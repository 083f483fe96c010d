//! `cargo xtask`: project automation for resnet-rs.
//!
//! - `cargo xtask ci`: formatting, clippy with warnings denied, the tests, a quick property run
//!   and a quick benchmark.
//! - `cargo xtask props [--cases N]`: every SIMD kernel against its naive twin, N random cases
//!   per property (default 1000) plus the fixed awkward shapes.
//! - `cargo xtask bench [OPTIONS]`: the benchmark report (release build); options are those of
//!   `resnet-bench --help` (`--quick`, `--models`, `--batch`, `--threads`, `--iters`,
//!   `--weights`, `--json`, `--plot`, `--ort`).

use std::process::{Command, ExitCode};

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

fn ci() -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
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
    props(&["--cases".into(), "200".into()])?;
    bench(&["--quick".into()])
}

const USAGE: &str = "usage: cargo xtask <ci | props [--cases N] | bench [OPTIONS]>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("props") => props(rest),
        Some("bench") => bench(rest),
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
