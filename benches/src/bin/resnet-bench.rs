//! The benchmark report behind `cargo xtask bench`: end-to-end latency and throughput, a
//! per-layer table, the machine line with a measured peak, JSON and an SVG plot.

#![forbid(unsafe_code)]

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use resnet_benches::train::{TrainConfig, run_row};
use resnet_benches::{Machine, median_min, plot, time_iters};
use resnet_models::{Backend, Edsr, EdsrConfig, LayerTime, Precision, ResNet, ResNetConfig};
use resnet_tensor::Tensor;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// Benchmark resnet-rs: end-to-end and per-layer, against the measured peak of the core.
#[derive(Debug, Parser)]
#[command(name = "resnet-bench")]
struct Args {
    /// A short run for CI: ResNet-18 only, batch 1, 1 thread, few iterations.
    #[arg(long)]
    quick: bool,
    /// Architectures (seeded random weights unless --weights is given).
    #[arg(long, value_delimiter = ',', default_value = "resnet18,resnet50")]
    models: Vec<String>,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batch: Vec<usize>,
    /// Thread counts (default: 1 and all cores).
    #[arg(long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Timed iterations per configuration at batch 1 (fewer at larger batches).
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Input size (square).
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// A safetensors file to benchmark instead of the named random models.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Write the numbers as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw per-layer GFLOP/s against the peak as SVG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Also time ONNX Runtime on the same weights with this tool (e.g. ../shared/tools/ort-baseline).
    #[arg(long)]
    ort: Option<PathBuf>,
    /// Also time OpenVINO in bf16 on the same weights with this tool, for the bf16 table
    /// (e.g. benches/tools/openvino-baseline).
    #[arg(long)]
    openvino: Option<PathBuf>,
    /// Skip the bf16 table (timed only where the CPU has AVX512-BF16).
    #[arg(long)]
    no_bf16: bool,
    /// Skip the EDSR-baseline x2 super-resolution benchmark.
    #[arg(long)]
    no_edsr: bool,
    /// Skip the training table (SGD steps of CIFAR ResNet-20/56 and ResNet-18).
    #[arg(long)]
    no_train: bool,
    /// Also time PyTorch's training on the same configurations with this tool (e.g.
    /// ../shared/tools/torch-train-baseline).
    #[arg(long)]
    torch: Option<PathBuf>,
    /// Internal: time one training configuration in this process and print its JSON row.
    #[arg(long, hide = true)]
    train_row: Option<String>,
}

/// The training table's configurations: CIFAR ResNet-20/56 at batch 128 on 1x28x28 and
/// 3x32x32, ResNet-18 at batch 32 on 3x64x64 (a quick run: ResNet-20 at batch 32 only).
fn train_configs(quick: bool, threads: &[usize]) -> Vec<TrainConfig> {
    let mut shapes: Vec<(&str, usize, usize, usize, usize)> = vec![
        ("cifar-resnet20", 128, 1, 28, 5),
        ("cifar-resnet20", 128, 3, 32, 5),
        ("cifar-resnet56", 128, 1, 28, 3),
        ("cifar-resnet56", 128, 3, 32, 3),
        ("resnet18", 32, 3, 64, 5),
    ];
    if quick {
        shapes = vec![("cifar-resnet20", 32, 1, 28, 2)];
    }
    shapes
        .into_iter()
        .flat_map(|(arch, batch, channels, size, iters)| {
            threads.iter().map(move |&threads| TrainConfig {
                arch: arch.to_string(),
                batch,
                channels,
                size,
                threads,
                iters,
            })
        })
        .collect()
}

/// Run a command and parse the last line of its output as JSON.
fn json_of(
    cmd: &mut std::process::Command,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    Ok(serde_json::from_str(line)?)
}

/// The training table: each configuration in a child process (its own peak memory), and
/// PyTorch's on the same one when `torch` is given.
fn train_table(
    configs: &[TrainConfig],
    torch: Option<&PathBuf>,
) -> Result<Vec<serde_json::Value>, Box<dyn std::error::Error>> {
    println!(
        "\nTraining: SGD steps (forward, backward, update; lr 0.01, momentum 0.9, weight decay 1e-4), seeded weights and inputs, 10 classes"
    );
    println!(
        "| model | batch | input | threads | ms/step | images/s | peak MiB | PyTorch images/s | PyTorch peak MiB | ours / PyTorch (images/s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let me = std::env::current_exe()?;
    let mut rows = Vec::new();
    for cfg in configs {
        let ours = json_of(std::process::Command::new(&me).args(["--train-row", &cfg.to_arg()]))?;
        let theirs = match torch {
            Some(tool) => Some(json_of(std::process::Command::new(tool).args([
                "speed",
                "--arch",
                &cfg.arch,
                "--batch",
                &cfg.batch.to_string(),
                "--channels",
                &cfg.channels.to_string(),
                "--size",
                &cfg.size.to_string(),
                "--threads",
                &cfg.threads.to_string(),
            ]))?),
            None => None,
        };
        let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let (ips, peak) = (f(&ours, "images_per_s"), f(&ours, "peak_rss_mb"));
        let (t_ips, t_peak) = theirs.as_ref().map_or((f64::NAN, f64::NAN), |t| {
            (f(t, "images_per_s"), f(t, "peak_rss_mb"))
        });
        let na = |v: f64, digits: usize| {
            if v.is_nan() {
                "-".to_string()
            } else {
                format!("{v:.digits$}")
            }
        };
        println!(
            "| {} | {} | {}x{}x{} | {} | {:.1} | {:.1} | {:.0} | {} | {} | {} |",
            cfg.arch,
            cfg.batch,
            cfg.channels,
            cfg.size,
            cfg.size,
            cfg.threads,
            f(&ours, "median_ms"),
            ips,
            peak,
            na(t_ips, 1),
            na(t_peak, 0),
            na(ips / t_ips, 2),
        );
        rows.push(serde_json::json!({"ours": ours, "pytorch": theirs}));
    }
    Ok(rows)
}

struct Row {
    model: String,
    batch: usize,
    threads: usize,
    median: f64,
    min: f64,
    gflop: f64,
    ort: Option<(f64, f64)>,
    /// Ours in bf16 (median, min), where the CPU has AVX512-BF16.
    bf16: Option<(f64, f64)>,
    /// OpenVINO in bf16 (median, min), with --openvino.
    openvino: Option<(f64, f64)>,
}

fn flops(profile: &[LayerTime]) -> f64 {
    profile.iter().map(|l| 2.0 * l.macs as f64).sum()
}

/// Median and fastest seconds of an external engine's run (`--ort`, `--openvino`: a tool
/// taking the weights file, `--batch`, `--threads`, `--iters`, `--size` and printing one JSON
/// line with `median_ms` and `min_ms`).
fn tool_time(
    tool: &PathBuf,
    weights: &PathBuf,
    batch: usize,
    threads: usize,
    iters: usize,
    size: usize,
) -> Result<(f64, f64), String> {
    let out = std::process::Command::new(tool)
        .arg(weights)
        .args([
            "--batch",
            &batch.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .args(["--iters", &iters.to_string(), "--size", &size.to_string()])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            tool.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("no JSON from {}", tool.display()))?;
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    match (v["median_ms"].as_f64(), v["min_ms"].as_f64()) {
        (Some(a), Some(b)) => Ok((a / 1e3, b / 1e3)),
        _ => Err(format!("unexpected output from {}: {line}", tool.display())),
    }
}

fn run(mut args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(row) = &args.train_row {
        let cfg = TrainConfig::parse(row).ok_or_else(|| format!("bad --train-row {row:?}"))?;
        println!("{}", run_row(&cfg)?);
        return Ok(());
    }
    if args.quick {
        args.models = vec!["resnet18".into()];
        args.batch = vec![1];
        args.threads = vec![1];
        args.iters = args.iters.min(3);
    }
    let machine = Machine::detect(if args.quick { 100 } else { 400 });
    if args.threads.is_empty() {
        args.threads = if machine.cores > 1 {
            vec![1, machine.cores]
        } else {
            vec![1]
        };
    }
    println!(
        "machine: {} | SIMD: {} | cores: {} | measured peak: {:.1} GFLOP/s per core (FMA loop)",
        machine.cpu, machine.simd, machine.cores, machine.peak_gflops
    );
    // The models: from a file, or seeded random weights of the named architectures.
    let tmp = std::env::temp_dir().join(format!("resnet-bench-{}", std::process::id()));
    let mut models: Vec<(String, ResNet, Option<PathBuf>)> = Vec::new();
    let time_bf16 = !args.no_bf16 && Precision::Bf16.is_available();
    if !args.no_bf16 && !time_bf16 {
        println!("bf16: this CPU has no AVX512-BF16; the bf16 table is left out");
    }
    if let Some(w) = &args.weights {
        let m = ResNet::from_file(w)?;
        models.push((m.config().name(), m, Some(w.clone())));
    } else {
        for name in &args.models {
            let cfg = ResNetConfig::by_name(name, 1000).ok_or_else(|| {
                format!(
                    "unknown model {name:?}; known: {}",
                    ResNetConfig::NAMES.join(", ")
                )
            })?;
            let m = ResNet::random(&cfg, 0)?;
            // The ORT baseline needs a file of the same weights.
            let file = if args.ort.is_some() || args.openvino.is_some() {
                std::fs::create_dir_all(&tmp)?;
                let p = tmp.join(format!("{name}.safetensors"));
                let map = resnet_models::random_tensor_map(&cfg, 0)?;
                std::fs::write(&p, map.to_safetensors_bytes(None)?)?;
                Some(p)
            } else {
                None
            };
            models.push((name.clone(), m, file));
        }
    }
    let configs: Vec<(usize, usize, usize)> = (0..models.len())
        .flat_map(|m| {
            let threads = args.threads.clone();
            args.batch
                .iter()
                .flat_map(move |&b| threads.clone().into_iter().map(move |t| (m, b, t)))
        })
        .collect();
    let bar = ProgressBar::new((configs.len() + models.len()) as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")?);
    // Per-layer profiles (batch 1, 1 thread): median of several runs per layer.
    let mut profiles = Vec::new();
    for (name, model, _) in &models {
        bar.set_message(format!("per-layer {name}"));
        let m = model.clone().with_threads(1)?;
        let x = Tensor::zeros(&[1, 3, args.size, args.size])?;
        m.forward(&x)?;
        let runs: Vec<Vec<LayerTime>> = (0..if args.quick { 1 } else { 7 })
            .map(|_| m.profile(&x))
            .collect::<Result<_, _>>()?;
        let mut layers = runs[0].clone();
        for (i, l) in layers.iter_mut().enumerate() {
            l.seconds = median_min(&runs.iter().map(|r| r[i].seconds).collect::<Vec<_>>()).0;
        }
        profiles.push((name.clone(), layers));
        bar.inc(1);
    }
    let mut rows = Vec::new();
    for &(mi, batch, threads) in &configs {
        let (name, model, file) = &models[mi];
        bar.set_message(format!("{name} batch {batch} threads {threads}"));
        let m = model.clone().with_threads(threads)?;
        let x = Tensor::from_vec(
            &[batch, 3, args.size, args.size],
            (0..batch * 3 * args.size * args.size)
                .map(|i| ((i % 251) as f32) / 125.0 - 1.0)
                .collect(),
        )?;
        let iters = (args.iters / batch.max(1)).max(3);
        let times = time_iters(iters, || m.forward(&x).map(|_| ()))?;
        let (median, min) = median_min(&times);
        let ort = match (&args.ort, file) {
            (Some(tool), Some(f)) => Some(tool_time(
                tool,
                f,
                batch,
                threads,
                iters.max(10),
                args.size,
            )?),
            _ => None,
        };
        // The same network in bf16, bound from the same weights (a file, or the same seed).
        let bf16 = if time_bf16 {
            let m16 = match file {
                Some(f) => ResNet::from_file_with(f, Backend::Fast, Precision::Bf16)?,
                None => ResNet::random_with(model.config(), 0, Backend::Fast, Precision::Bf16)?,
            }
            .with_threads(threads)?;
            let times = time_iters(iters, || m16.forward(&x).map(|_| ()))?;
            Some(median_min(&times))
        } else {
            None
        };
        let openvino = match (&args.openvino, file, bf16) {
            (Some(tool), Some(f), Some(_)) => Some(tool_time(
                tool,
                f,
                batch,
                threads,
                iters.max(10),
                args.size,
            )?),
            _ => None,
        };
        rows.push(Row {
            model: name.clone(),
            batch,
            threads,
            median,
            min,
            gflop: flops(&profiles[mi].1) * batch as f64 / 1e9,
            ort,
            bf16,
            openvino,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&tmp);

    println!(
        "\nEnd to end ({}x{}, medians of timed runs)",
        args.size, args.size
    );
    print!("| model | batch | threads | median ms | min ms | images/s | GFLOP/s* | % of peak |");
    if args.ort.is_some() {
        print!(" ORT median ms | ours / ORT |");
    }
    println!();
    println!(
        "|---|---|---|---|---|---|---|---|{}",
        if args.ort.is_some() { "---|---|" } else { "" }
    );
    for r in &rows {
        let gfs = r.gflop / r.median;
        print!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.1} | {:.1} | {:.0}% |",
            r.model,
            r.batch,
            r.threads,
            r.median * 1e3,
            r.min * 1e3,
            r.batch as f64 / r.median,
            gfs,
            100.0 * gfs / (machine.peak_gflops * r.threads as f64)
        );
        if let Some((om, _)) = r.ort {
            print!(" {:.2} | {:.2} |", om * 1e3, r.median / om);
        }
        println!();
    }
    if rows.iter().any(|r| r.bf16.is_some()) {
        println!(
            "\nEnd to end in bf16 (opt-in `Precision::Bf16`: bf16 products, f32 sums; about 1e-2 \
             relative to f32), same weights and inputs"
        );
        print!(
            "| model | batch | threads | bf16 median ms | bf16 min ms | f32 median ms | f32 / bf16 |"
        );
        if args.openvino.is_some() {
            print!(" OpenVINO bf16 median ms | ours bf16 / OpenVINO |");
        }
        println!();
        println!(
            "|---|---|---|---|---|---|---|{}",
            if args.openvino.is_some() {
                "---|---|"
            } else {
                ""
            }
        );
        for r in &rows {
            let Some((bm, bmin)) = r.bf16 else { continue };
            print!(
                "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                r.model,
                r.batch,
                r.threads,
                bm * 1e3,
                bmin * 1e3,
                r.median * 1e3,
                r.median / bm
            );
            if let Some((om, _)) = r.openvino {
                print!(" {:.2} | {:.2} |", om * 1e3, bm / om);
            }
            println!();
        }
    }
    for (name, layers) in &profiles {
        let total: f64 = layers.iter().map(|l| l.seconds).sum();
        println!(
            "\nPer layer: {name}, batch 1, 1 thread ({:.2} ms in all)",
            total * 1e3
        );
        println!(
            "| layer | input → output | algorithm | ms | GFLOP/s* | real GFLOP/s** | % of peak** | share |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for l in layers {
            let gfs = 2.0 * l.macs as f64 / l.seconds / 1e9;
            let real_macs = l.algo.map_or(l.macs, |a| {
                a.product_macs(
                    l.macs,
                    l.output[0],
                    l.input[1],
                    l.output[1],
                    l.output[2],
                    l.output[3],
                )
            });
            let real = 2.0 * real_macs as f64 / l.seconds / 1e9;
            let (rate, real_rate, share_of_peak) = if l.macs == 0 {
                ("-".to_string(), "-".to_string(), "-".to_string())
            } else {
                (
                    format!("{gfs:.1}"),
                    format!("{real:.1}"),
                    format!("{:.0}%", 100.0 * real / machine.peak_gflops),
                )
            };
            println!(
                "| {} | {}x{}x{} → {}x{}x{} | {} | {:.3} | {} | {} | {} | {:.1}% |",
                l.name,
                l.input[1],
                l.input[2],
                l.input[3],
                l.output[1],
                l.output[2],
                l.output[3],
                l.algo.map_or_else(|| "-".to_string(), |a| a.to_string()),
                l.seconds * 1e3,
                rate,
                real_rate,
                share_of_peak,
                100.0 * l.seconds / total
            );
        }
    }
    println!(
        "\n* GFLOP/s count the multiply-adds of direct convolution (2 FLOP each), whatever the \
         algorithm: Winograd layers do fewer, so their rate can exceed the peak.\n** The \
         multiply-adds the algorithm's matrix products really perform (Winograd: in the \
         transform domain, per channel pair: F(2x2) 16 per 4x4 tile instead of 36 per 2x2 \
         output pixels, F(4x4) 36 per 6x6 tile instead of 144 per 4x4), so the share of peak is \
         honest for every algorithm; the transforms' additions are not counted."
    );
    // Enhancement: EDSR-baseline x2 on a 480x270 input, tiled as the CLI does.
    let mut edsr_rows = Vec::new();
    if !args.no_edsr {
        let (h, w) = if args.quick { (68, 120) } else { (270, 480) };
        let model = Edsr::random(&EdsrConfig::baseline(2), 0)?;
        let x = Tensor::from_vec(
            &[1, 3, h, w],
            (0..3 * h * w).map(|i| (i % 256) as f32).collect(),
        )?;
        println!(
            "\nEnhancement: EDSR-baseline x2 (16 blocks, 64 features), {w}x{h} input, default tiles (192)"
        );
        println!("| threads | median ms | min ms | input MP/s | output MP/s | GFLOP/s* |");
        println!("|---|---|---|---|---|---|");
        for &threads in &args.threads {
            let m = model.clone().with_threads(threads)?;
            let times = time_iters(if args.quick { 1 } else { 3 }, || {
                m.forward_tiled(&x, 192).map(|_| ())
            })?;
            let (median, min) = median_min(&times);
            let mp = (h * w) as f64 / 1e6;
            let gf = 2.0 * m.macs(h, w) as f64 / median / 1e9;
            println!(
                "| {threads} | {:.1} | {:.1} | {:.3} | {:.3} | {gf:.1} |",
                median * 1e3,
                min * 1e3,
                mp / median,
                4.0 * mp / median
            );
            edsr_rows.push(json!({"threads": threads, "height": h, "width": w, "median_ms": median * 1e3, "min_ms": min * 1e3,
                "input_megapixels_per_s": mp / median, "output_megapixels_per_s": 4.0 * mp / median, "gflops": gf}));
        }
    }
    let train_rows = if args.no_train {
        Vec::new()
    } else {
        train_table(
            &train_configs(args.quick, &args.threads),
            args.torch.as_ref(),
        )?
    };
    if let Some(path) = &args.json {
        let v = json!({
            "training": train_rows,
            "edsr_baseline_x2": edsr_rows,
            "machine": {"cpu": machine.cpu, "simd": machine.simd, "cores": machine.cores, "peak_gflops": machine.peak_gflops},
            "size": args.size,
            "end_to_end": rows.iter().map(|r| json!({
                "model": r.model, "batch": r.batch, "threads": r.threads,
                "median_ms": r.median * 1e3, "min_ms": r.min * 1e3,
                "images_per_s": r.batch as f64 / r.median, "gflops": r.gflop / r.median,
                "ort_median_ms": r.ort.map(|o| o.0 * 1e3), "ort_min_ms": r.ort.map(|o| o.1 * 1e3),
                "bf16_median_ms": r.bf16.map(|o| o.0 * 1e3), "bf16_min_ms": r.bf16.map(|o| o.1 * 1e3),
                "openvino_bf16_median_ms": r.openvino.map(|o| o.0 * 1e3),
                "openvino_bf16_min_ms": r.openvino.map(|o| o.1 * 1e3),
            })).collect::<Vec<_>>(),
            "layers": profiles.iter().map(|(name, layers)| json!({
                "model": name,
                "layers": layers.iter().map(|l| json!({
                    "name": l.name, "algorithm": l.algo.map(|a| a.to_string()),
                    "input": l.input, "output": l.output, "macs": l.macs,
                    "ms": l.seconds * 1e3, "gflops": 2.0 * l.macs as f64 / l.seconds / 1e9,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
        println!("\nwrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        let groups: Vec<(String, Vec<plot::Bar>)> = profiles
            .iter()
            .map(|(name, layers)| {
                let bars = layers
                    .iter()
                    .filter(|l| l.algo.is_some())
                    .map(|l| plot::Bar {
                        label: l.name.clone(),
                        gflops: 2.0 * l.macs as f64 / l.seconds / 1e9,
                    })
                    .collect();
                (name.clone(), bars)
            })
            .collect();
        std::fs::write(path, plot::svg(&groups, machine.peak_gflops))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("resnet-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
