//! The `resnet` binary on users' own files and habits: folders with broken images, sizes that
//! would not fit in memory, outputs that cannot be written, files of the wrong kind, and the
//! command-line conventions the help promises. Small generated weights only: no fixtures.

use assert_cmd::Command;
use resnet_models::{BlockKind, EdsrConfig, ResNetConfig};
use resnet_weights::WeightFile;
use std::path::{Path, PathBuf};

fn resnet() -> Command {
    Command::cargo_bin("resnet").expect("the resnet binary is built")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// What a run printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Run {
    let out = resnet().args(args).output().unwrap();
    let r = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!r.stderr.contains("panicked"), "{args:?}: {}", r.stderr);
    r
}

/// Run and expect failure: exit code 1, one line on stderr starting with "error:".
fn fails(args: &[&str]) -> String {
    let r = run(args);
    assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
    assert!(r.stderr.starts_with("error: "), "{args:?}: {}", r.stderr);
    assert_eq!(
        r.stderr.trim_end().lines().count(),
        1,
        "{args:?}: {}",
        r.stderr
    );
    r.stderr
}

fn succeeds(args: &[&str]) -> Run {
    let r = run(args);
    assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
    r
}

/// A tiny torchvision-style classifier (one basic block per stage, 3 classes).
fn tiny_resnet(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.safetensors");
    let cfg = ResNetConfig::new(BlockKind::Basic, vec![1]).with_num_classes(3);
    let bytes = resnet_models::random_tensor_map(&cfg, 1)
        .unwrap()
        .to_safetensors_bytes(None)
        .unwrap();
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A tiny EDSR x2 network (one residual block of 8 features).
fn tiny_edsr(dir: &Path) -> PathBuf {
    let p = dir.join("edsr.safetensors");
    let mut cfg = EdsrConfig::baseline(2);
    cfg.n_resblocks = 1;
    cfg.n_feats = 8;
    let bytes = resnet_models::random_edsr_tensor_map(&cfg, 3)
        .unwrap()
        .to_safetensors_bytes(None)
        .unwrap();
    std::fs::write(&p, bytes).unwrap();
    p
}

fn png(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7) as u8, (y * 11) as u8, ((x + y) * 3) as u8])
    })
    .save(path)
    .unwrap();
}

/// A real JPEG (noisy, so its scan data is long), encoded by the `image` crate.
fn jpeg_bytes() -> Vec<u8> {
    let img = image::RgbImage::from_fn(96, 64, |x, y| {
        let v = (x * 31 + y * 17 + (x * y) % 13) as u8;
        image::Rgb([v, v.wrapping_mul(3), 255 - v])
    });
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
        .encode_image(&img)
        .unwrap();
    bytes
}

/// JSON lines of stdout.
fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A folder of good and bad images: `a.png`, `b_broken.png` (not an image), `c_half.jpg` (a
/// JPEG cut in half), `d.jpg` (the same JPEG whole), `sub/e.png`, and `notes.txt`.
fn folder(dir: &Path) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(images.join("sub")).unwrap();
    png(&images.join("a.png"), 20, 16);
    std::fs::write(images.join("b_broken.png"), b"definitely not a png").unwrap();
    let jpeg = jpeg_bytes();
    std::fs::write(images.join("c_half.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    std::fs::write(images.join("d.jpg"), &jpeg).unwrap();
    png(&images.join("sub/e.png"), 17, 23);
    std::fs::write(images.join("notes.txt"), b"not an image").unwrap();
    images
}

#[test]
fn a_folder_with_broken_images_keeps_every_good_result() {
    let dir = tempfile::tempdir().unwrap();
    let w = tiny_resnet(dir.path());
    let images = folder(dir.path());
    let args = ["classify", "--json", "--size", "32", "--weights", s(&w)];

    // Default: the two bad files reported and skipped, both good ones printed, exit code 1.
    let r = run(&[&args[..], &[s(&images)]].concat());
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let lines = json_lines(&r.stdout);
    let paths: Vec<&str> = lines.iter().map(|l| l["path"].as_str().unwrap()).collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(
        paths[0].ends_with("a.png") && paths[1].ends_with("d.jpg"),
        "{paths:?}"
    );
    let warnings: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 2, "{}", r.stderr);
    assert!(warnings[0].contains("b_broken.png"), "{}", r.stderr);
    // The truncated JPEG is an error, not a grey-padded success.
    assert!(
        warnings[1].contains("c_half.jpg") && warnings[1].contains("truncated"),
        "{}",
        r.stderr
    );
    let last = r.stderr.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("error: 2 of 4 images") && last.contains("skipped"),
        "{}",
        r.stderr
    );

    // -r adds the subfolder's image, after the folder's own.
    let r = run(&[&args[..], &["-r", s(&images)]].concat());
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let lines = json_lines(&r.stdout);
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    assert!(lines[2]["path"].as_str().unwrap().ends_with("e.png"));
    assert!(r.stderr.contains("2 of 5 images"), "{}", r.stderr);

    // --strict: the first bad image ends the run, with one error line, after the results
    // of the batches before it.
    let r = run(&[&args[..], &["--strict", "--batch", "1", s(&images)]].concat());
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_eq!(json_lines(&r.stdout).len(), 1, "{}", r.stdout);
    assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.starts_with("error: ") && r.stderr.contains("b_broken.png"),
        "{}",
        r.stderr
    );

    // Text output too, and a clean folder exits 0.
    let good = dir.path().join("good");
    std::fs::create_dir(&good).unwrap();
    png(&good.join("x.png"), 30, 30);
    std::fs::copy(images.join("d.jpg"), good.join("y.jpeg")).unwrap();
    let r = succeeds(&["classify", "--size", "32", "--weights", s(&w), s(&good)]);
    assert!(
        r.stdout.contains("x.png") && r.stdout.contains("y.jpeg"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

#[test]
fn embed_writes_the_good_images_and_reports_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let w = tiny_resnet(dir.path());
    let images = folder(dir.path());
    let out = dir.path().join("e.safetensors");
    let r = run(&[
        "embed",
        "--size",
        "32",
        "-r",
        "--weights",
        s(&w),
        "--output",
        s(&out),
        s(&images),
    ]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("wrote 3 embeddings"), "{}", r.stderr);
    assert!(r.stderr.contains("2 of 5 images"), "{}", r.stderr);
    let f = WeightFile::open(&out).unwrap();
    assert_eq!(f.load("embeddings").unwrap().shape().dims(), &[3, 64]);
    let paths: Vec<String> = serde_json::from_str(&f.metadata()["paths"]).unwrap();
    assert_eq!(paths.len(), 3);
    assert!(
        paths[0].ends_with("a.png") && paths[2].ends_with("e.png"),
        "{paths:?}"
    );

    // --strict stops at the first bad image and writes nothing.
    let out2 = dir.path().join("strict.safetensors");
    let e = fails(&[
        "embed",
        "--strict",
        "--weights",
        s(&w),
        "--output",
        s(&out2),
        s(&images),
    ]);
    assert!(e.contains("b_broken.png"), "{e}");
    assert!(!out2.exists());
}

#[test]
fn folders_without_images_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let w = tiny_resnet(dir.path());
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("deeper")).unwrap();
    let e = fails(&["classify", "--weights", s(&w), s(&empty)]);
    assert!(
        e.contains("no images found in") && e.contains("empty"),
        "{e}"
    );
    // Images only in a subfolder: the error points to -r, and -r finds them.
    png(&empty.join("deeper/z.png"), 8, 8);
    let e = fails(&["classify", "--weights", s(&w), s(&empty)]);
    assert!(e.contains("-r"), "{e}");
    let r = succeeds(&["classify", "-r", "--weights", s(&w), s(&empty)]);
    assert!(r.stdout.contains("z.png"), "{}", r.stdout);
}

#[test]
fn a_truncated_jpeg_is_an_error_like_a_truncated_png() {
    let dir = tempfile::tempdir().unwrap();
    let w = tiny_resnet(dir.path());
    let jpeg = jpeg_bytes();
    let half = dir.path().join("half.jpg");
    std::fs::write(&half, &jpeg[..jpeg.len() / 2]).unwrap();
    let e = fails(&["classify", "--weights", s(&w), s(&half)]);
    assert!(e.contains("half.jpg") && e.contains("truncated"), "{e}");
    let png_path = dir.path().join("p.png");
    png(&png_path, 40, 40);
    let bytes = std::fs::read(&png_path).unwrap();
    let half_png = dir.path().join("half.png");
    std::fs::write(&half_png, &bytes[..bytes.len() / 2]).unwrap();
    let e = fails(&["classify", "--weights", s(&w), s(&half_png)]);
    assert!(e.contains("half.png"), "{e}");
    // A photo from the shared sample images, cut in half, when they are there.
    let rocket =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/images/rocket.jpg");
    if let Ok(bytes) = std::fs::read(&rocket) {
        let cut = dir.path().join("rocket_half.jpg");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let e = fails(&["classify", "--weights", s(&w), s(&cut)]);
        assert!(e.contains("truncated"), "{e}");
        // The whole photo still classifies.
        succeeds(&["classify", "--weights", s(&w), s(&rocket)]);
    }
}

#[test]
fn sizes_that_cannot_fit_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let w = tiny_resnet(dir.path());
    // A wide image resized so its short side is 16384: 131072 x 16384 pixels.
    let wide = dir.path().join("wide.png");
    png(&wide, 64, 8);
    let e = fails(&[
        "classify",
        "--resize",
        "16384",
        "--weights",
        s(&w),
        s(&wide),
    ]);
    assert!(e.contains("resiz") && e.contains("wide.png"), "{e}");
    // Batches of 64 images of 16384 x 16384 through the network: terabytes.
    let many = dir.path().join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..64 {
        png(&many.join(format!("{i:02}.png")), 4, 4);
    }
    let e = fails(&[
        "classify",
        "--size",
        "16384",
        "--batch",
        "64",
        "--weights",
        s(&w),
        s(&many),
    ]);
    assert!(e.contains("memory") && e.contains("--batch"), "{e}");
    let out = dir.path().join("e.safetensors");
    let e = fails(&[
        "embed",
        "--crop",
        "16384",
        "--batch",
        "64",
        "--weights",
        s(&w),
        "-o",
        s(&out),
        s(&many),
    ]);
    assert!(e.contains("memory") && e.contains("--crop"), "{e}");
    // bench allocates its input batch itself.
    let e = fails(&[
        "bench", "--batch", "65535", "--size", "4096", "--iters", "1",
    ]);
    assert!(e.contains("memory") && e.contains("--batch"), "{e}");
    let e = fails(&[
        "bench",
        "--weights",
        s(&w),
        "--batch",
        "65535",
        "--size",
        "4096",
        "--iters",
        "1",
    ]);
    assert!(e.contains("memory"), "{e}");
    // A huge --batch with few images is only as large as the images.
    succeeds(&[
        "classify",
        "--batch",
        "65535",
        "--size",
        "16",
        "--weights",
        s(&w),
        s(&wide),
    ]);
}

#[test]
fn enhance_checks_its_output_before_computing_and_raises_tiny_tiles() {
    let dir = tempfile::tempdir().unwrap();
    let edsr = tiny_edsr(dir.path());
    let input = dir.path().join("in.png");
    png(&input, 21, 13);
    // Output problems fail first, before the (nonexistent) weights are even looked at.
    let cases = [
        ("out.xyz", "is not an image format"),
        ("out", "no file extension"),
        ("missing/out.png", "does not exist"),
    ];
    for (name, msg) in cases {
        let out = dir.path().join(name);
        let e = fails(&[
            "enhance",
            s(&input),
            s(&out),
            "--weights",
            "/nonexistent.safetensors",
        ]);
        assert!(e.contains("cannot write") && e.contains(msg), "{name}: {e}");
    }
    let e = fails(&["enhance", s(&input), s(dir.path()), "--weights", s(&edsr)]);
    assert!(e.contains("is a directory"), "{e}");
    // A failure after the output was claimed leaves no temporary file behind.
    let out = dir.path().join("out.png");
    let e = fails(&[
        "enhance",
        s(&input),
        s(&out),
        "--weights",
        s(&tiny_resnet(dir.path())),
    ]);
    assert!(e.contains("head.0.weight"), "{e}");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("out.png")), "{names:?}");

    // --tile 2 is raised (said on stderr), and the result is the untiled one.
    let r = succeeds(&[
        "enhance",
        s(&input),
        s(&out),
        "--weights",
        s(&edsr),
        "--tile",
        "2",
    ]);
    assert!(
        r.stderr.contains("note: --tile 2 is too small"),
        "{}",
        r.stderr
    );
    let tiled = image::open(&out).unwrap().to_rgb8();
    assert_eq!(tiled.dimensions(), (42, 26));
    let whole = dir.path().join("whole.png");
    let r = succeeds(&[
        "enhance",
        s(&input),
        s(&whole),
        "--weights",
        s(&edsr),
        "--tile",
        "4000000000",
    ]);
    assert!(!r.stderr.contains("note:"), "{}", r.stderr);
    assert_eq!(image::open(&whole).unwrap().to_rgb8(), tiled);
    // forward with EDSR weights raises the tile the same way.
    let x = dir.path().join("x.safetensors");
    let t = resnet_tensor::Tensor::from_vec(&[1, 3, 9, 7], (0..189).map(|i| i as f32).collect())
        .unwrap();
    resnet_weights::write_safetensors(&x, &[("x", &t)], None).unwrap();
    let y = dir.path().join("y.safetensors");
    let r = succeeds(&[
        "forward",
        "--weights",
        s(&edsr),
        "--input",
        s(&x),
        "--output",
        s(&y),
        "--tile",
        "1",
    ]);
    assert!(r.stderr.contains("--tile 1 is too small"), "{}", r.stderr);
}

#[test]
fn wrong_files_get_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let w = tiny_resnet(dir.path());
    let edsr = tiny_edsr(dir.path());
    let img = dir.path().join("i.png");
    png(&img, 12, 12);
    // A directory as weights.
    for args in [
        &["classify", "--weights", s(dir.path()), s(&img)][..],
        &["inspect", s(dir.path())],
        &["bench", "--weights", s(dir.path())],
    ] {
        let e = fails(args);
        assert!(e.contains("is a directory"), "{args:?}: {e}");
    }
    // EDSR weights where a classifier is needed: pointed to enhance.
    for args in [
        &["classify", "--weights", s(&edsr), s(&img)][..],
        &["bench", "--weights", s(&edsr), "--iters", "1"],
        &[
            "embed",
            "--weights",
            s(&edsr),
            "-o",
            s(&dir.path().join("e.safetensors")),
            s(&img),
        ],
    ] {
        let e = fails(args);
        assert!(
            e.contains("EDSR") && e.contains("resnet enhance"),
            "{args:?}: {e}"
        );
    }
    // Outputs that cannot be written.
    let nowhere = dir.path().join("no/such/dir/o.safetensors");
    let e = fails(&["embed", "--weights", s(&w), "-o", s(&nowhere), s(&img)]);
    assert!(
        e.contains("cannot write") && e.contains("o.safetensors"),
        "{e}"
    );
    let x = dir.path().join("x.safetensors");
    let t = resnet_tensor::Tensor::zeros(&[1, 3, 16, 16]).unwrap();
    resnet_weights::write_safetensors(&x, &[("x", &t)], None).unwrap();
    let e = fails(&[
        "forward",
        "--weights",
        s(&w),
        "--input",
        s(&x),
        "--output",
        s(&nowhere),
    ]);
    assert!(e.contains("cannot write"), "{e}");
    let e = fails(&[
        "forward",
        "--weights",
        s(&w),
        "--input",
        s(&x),
        "--output",
        s(dir.path()),
    ]);
    assert!(
        e.contains("cannot write") && e.contains("is a directory"),
        "{e}"
    );
}

#[test]
fn inspect_says_when_a_file_is_not_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("data.safetensors");
    let mut m = resnet_weights::TensorMap::new();
    for i in 0..25 {
        m.insert(
            format!("embedding_{i:02}"),
            resnet_tensor::Tensor::zeros(&[2]).unwrap(),
        );
    }
    std::fs::write(&p, m.to_safetensors_bytes(None).unwrap()).unwrap();
    let r = succeeds(&["inspect", s(&p)]);
    assert!(
        r.stdout.contains("naming:       none (not a model file)"),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("naming:       torchvision"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("architecture: not recognised: not a model"),
        "{}",
        r.stdout
    );
    // Unmapped names one per line, the first 20, then a count.
    assert!(
        r.stdout
            .contains("unmapped:     25 tensor(s):\n  embedding_00\n  embedding_01\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("  embedding_19\n  … and 5 more"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("  embedding_20\n"), "{}", r.stdout);
    let r = succeeds(&["inspect", "--json", s(&p)]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["model"], false);
    assert!(v["scheme"].is_null());
    assert_eq!(v["unmapped"].as_array().unwrap().len(), 25);
    // A model file is still one.
    let w = tiny_resnet(dir.path());
    let r = succeeds(&["inspect", "--json", s(&w)]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["model"], true);
    assert_eq!(v["scheme"], "torchvision/timm");
}

#[test]
fn mean_and_std_take_both_forms_the_help_promises() {
    let dir = tempfile::tempdir().unwrap();
    let w = tiny_resnet(dir.path());
    let img = dir.path().join("i.png");
    png(&img, 40, 30);
    let probs = |extra: &[&str]| {
        let r = succeeds(
            &[
                &["classify", "--json", "--size", "32", "--weights", s(&w)][..],
                extra,
                &[s(&img)],
            ]
            .concat(),
        );
        json_lines(&r.stdout)[0]["probabilities"].clone()
    };
    let three = probs(&["--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"]);
    let one = probs(&["--mean", "0.5", "--std", "0.25"]);
    let equals = probs(&["--mean=0.5,0.5,0.5", "--std=0.25"]);
    assert_eq!(three, one);
    assert_eq!(three, equals);
    assert_ne!(three, probs(&[]));
    let e = fails(&["classify", "--mean", "0.5,0.5", "--weights", s(&w), s(&img)]);
    assert!(e.contains("--mean takes one value or three"), "{e}");
    // Values separated by spaces: the stray ones are taken for images, and the error says
    // how to write them.
    let e = fails(&[
        "classify",
        "--weights",
        s(&w),
        s(&img),
        "--mean",
        "0.5",
        "0.5",
        "0.5",
    ]);
    assert!(e.contains("--mean 0.5,0.5,0.5"), "{e}");

    // A greyscale net: one value, or three equal ones (a grey pixel's R, G and B).
    let cfg = resnet_models::CifarConfig::new(8, 10).with_in_channels(1);
    let plan = resnet_models::cifar_plan(&cfg).unwrap();
    let map = resnet_models::random_plan_weights(&plan, 4).unwrap();
    let tensors: Vec<(&str, &resnet_tensor::Tensor)> = map.iter().collect();
    let meta = std::collections::HashMap::from([
        ("arch".to_string(), cfg.name()),
        ("in_channels".to_string(), "1".to_string()),
        ("num_classes".to_string(), "10".to_string()),
    ]);
    let gray = dir.path().join("gray.safetensors");
    resnet_weights::write_safetensors(&gray, &tensors, Some(meta)).unwrap();
    let gray_probs = |extra: &[&str]| {
        let r = succeeds(
            &[
                &["classify", "--json", "--weights", s(&gray)][..],
                extra,
                &[s(&img)],
            ]
            .concat(),
        );
        json_lines(&r.stdout)[0]["probabilities"].clone()
    };
    assert_eq!(
        gray_probs(&["--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2"]),
        gray_probs(&["--mean", "0.5", "--std", "0.2"])
    );
    let e = fails(&[
        "classify",
        "--mean",
        "0.5,0.4,0.5",
        "--weights",
        s(&gray),
        s(&img),
    ]);
    assert!(e.contains("three equal ones"), "{e}");
}

#[test]
fn json_probabilities_have_six_significant_digits() {
    let dir = tempfile::tempdir().unwrap();
    let w = tiny_resnet(dir.path());
    let img = dir.path().join("i.png");
    png(&img, 40, 30);
    let r = succeeds(&[
        "classify",
        "--json",
        "--top",
        "3",
        "--weights",
        s(&w),
        s(&img),
    ]);
    let line = r.stdout.lines().next().unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let probs = v["probabilities"].as_array().unwrap();
    assert_eq!(probs.len(), 3);
    let text = line.split("\"probabilities\":[").nth(1).unwrap();
    let text = text.split(']').next().unwrap();
    for p in text.split(',') {
        let digits: String = p
            .trim_start_matches(['0', '.'])
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .filter(char::is_ascii_digit)
            .collect();
        assert!(digits.len() <= 6, "{p} in {line}");
    }
    let sum: f64 = probs.iter().map(|p| p.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-5, "{sum}");
}

#[test]
fn help_lists_every_command_and_forward_stages_on_edsr_is_explained() {
    let r = succeeds(&["--help"]);
    let about = r.stdout.lines().next().unwrap();
    assert!(about.contains("enhance"), "{about}");
    for cmd in [
        "classify", "embed", "enhance", "forward", "inspect", "convert", "bench", "train", "eval",
    ] {
        assert!(
            r.stdout.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd} not in {}",
            r.stdout
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let edsr = tiny_edsr(dir.path());
    let x = dir.path().join("x.safetensors");
    let t = resnet_tensor::Tensor::zeros(&[1, 3, 8, 8]).unwrap();
    resnet_weights::write_safetensors(&x, &[("x", &t)], None).unwrap();
    let y = dir.path().join("y.safetensors");
    let e = fails(&[
        "forward",
        "--weights",
        s(&edsr),
        "--input",
        s(&x),
        "--output",
        s(&y),
        "--stages",
    ]);
    assert!(
        e.contains("--stages") && e.contains("EDSR") && e.contains("output"),
        "{e}"
    );
    assert!(!y.exists());
}

#[test]
fn bench_train_refuses_a_batch_that_cannot_fit() {
    let e = fails(&[
        "bench",
        "--train",
        "--arch",
        "cifar-resnet20",
        "--batch",
        "65535",
        "--size",
        "4096",
        "--iters",
        "1",
    ]);
    assert!(e.contains("memory") && e.contains("--batch"), "{e}");
}

/// A fixture of `crates/resnet-weights/tests/data/torch/` (written by its make_fixtures.py).
fn torch_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../resnet-weights/tests/data/torch")
        .join(name)
}

#[test]
fn convert_writes_a_checkpoints_tensors_as_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("i.png");
    png(&img, 40, 30);
    let twin = WeightFile::open(torch_fixture("basic.safetensors")).unwrap();
    let classify = |w: &Path| {
        succeeds(&[
            "classify",
            "--json",
            "--size",
            "32",
            "--weights",
            s(w),
            s(&img),
        ])
        .stdout
    };
    let want = classify(&torch_fixture("basic.safetensors"));
    for name in ["basic.pth", "basic_legacy.pth", "basic_wrapped.pth"] {
        let out = dir.path().join(format!("{name}.safetensors"));
        let r = succeeds(&["convert", s(&torch_fixture(name)), s(&out)]);
        assert!(
            r.stderr.contains("wrote") && r.stderr.contains("PyTorch checkpoint"),
            "{}",
            r.stderr
        );
        // The same tensors as the safetensors file made from the same state_dict.
        let got = WeightFile::open(&out).unwrap();
        assert_eq!(got.tensors().count(), twin.tensors().count(), "{name}");
        for (key, info) in twin.tensors() {
            if info.dtype.is_float() {
                assert_eq!(
                    got.load(key).unwrap(),
                    twin.load(key).unwrap(),
                    "{name}: {key}"
                );
            }
        }
        assert_eq!(classify(&out), want, "{name}");
    }
    // Element types are kept: an F16 checkpoint gives F16 tensors.
    let out = dir.path().join("f16.safetensors");
    succeeds(&["convert", s(&torch_fixture("bottleneck_f16.pth")), s(&out)]);
    let got = WeightFile::open(&out).unwrap();
    assert!(
        got.tensors().any(|(_, i)| i.dtype.to_string() == "F16"),
        "{:?}",
        got.tensors()
            .map(|(_, i)| i.dtype.to_string())
            .collect::<Vec<_>>()
    );
    // EDSR's .pt: enhance reads the converted file as it reads the checkpoint.
    let out = dir.path().join("edsr.safetensors");
    succeeds(&["convert", s(&torch_fixture("edsr_tiny_x3.pt")), s(&out)]);
    let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
    succeeds(&[
        "enhance",
        s(&img),
        s(&a),
        "-w",
        s(&torch_fixture("edsr_tiny_x3.pt")),
    ]);
    succeeds(&["enhance", s(&img), s(&b), "-w", s(&out)]);
    assert_eq!(
        image::open(&a).unwrap().to_rgb8(),
        image::open(&b).unwrap().to_rgb8()
    );

    // Errors: one line, and nothing written.
    let out = dir.path().join("never.safetensors");
    let e = fails(&["convert", s(&torch_fixture("hostile_system.pth")), s(&out)]);
    assert!(e.contains("refusing pickle global"), "{e}");
    assert!(!out.exists());
    let e = fails(&[
        "convert",
        s(&torch_fixture("basic.pth")),
        s(&dir.path().join("x.pth")),
    ]);
    assert!(e.contains(".safetensors"), "{e}");
    let e = fails(&["convert", s(dir.path()), s(&out)]);
    assert!(e.contains("is a directory"), "{e}");
    let e = fails(&[
        "convert",
        s(&torch_fixture("basic.pth")),
        s(&dir.path().join("no/o.safetensors")),
    ]);
    assert!(e.contains("cannot write"), "{e}");
    let same = dir.path().join("same.safetensors");
    std::fs::copy(torch_fixture("basic.safetensors"), &same).unwrap();
    let e = fails(&["convert", s(&same), s(&same)]);
    assert!(e.contains("both the input and the output"), "{e}");
    assert!(!out.exists());
}

#[test]
fn absurd_thread_counts_are_usage_errors() {
    for n in ["0", "1025", "65535"] {
        let out = Command::cargo_bin("resnet")
            .unwrap()
            .args(["bench", "--threads", n])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--threads {n}");
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains("is not in 1..=1024"), "{e}");
    }
}
