//! `cargo xtask degradation`: the degradation study of He et al. 2016 ("Deep Residual Learning
//! for Image Recognition", section 4.1 and figure 4). Plain nets train worse as they get deeper;
//! residual nets do not. It also asks whether a MAP prior centred on the identity (weight decay
//! toward a Dirac kernel instead of toward zero, `resnet train --prior identity`) rescues a deep
//! plain net.
//!
//! It trains, with one recipe and one seed, plain-20, plain-56, ResNet-20, ResNet-56 and plain-56
//! with the identity prior at each `--lambdas` strength, `--jobs` runs at a time, each run with
//! `resnet train ... --out OUT/<label>`, which writes `OUT/<label>/metrics.jsonl` (one JSON
//! object per epoch). Complete runs are skipped and interrupted ones resumed from their
//! checkpoints, so a study can be continued. Then it writes `degradation.md` (tables, the
//! degradation gap, how much of it each prior closes, a reading of the numbers) and
//! `degradation.svg` (training and test error against epochs, log scale as in the paper).
//! `--report-only` writes the report from the metrics already in OUT.
//!
//! Everything here is plain std: a parser for flat JSON objects, the process pool, Markdown and
//! SVG written by hand.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

pub const USAGE: &str = "cargo xtask degradation [--quick] [--report-only] [--data SPEC] [--epochs E] [--subset N] [--test-subset N] [--seed S] [--lambdas a,b,c] [--prior-noise S] [--random-start yes|no] [--threads T] [--jobs J] [--out DIR] [--report DIR] [--torch PATH]";

const HELP: &str = "\
cargo xtask degradation: plain-20/56 vs ResNet-20/56 vs plain-56 with an identity prior
(He et al. 2016's degradation study), trained with `resnet train`, and a report.

  --quick          CI smoke run: --subset 1000 --test-subset 1000 --epochs 2 --lambdas 1e-3,
                   out and report in target/degradation-quick
  --report-only    write the report from the metrics already in --out; train nothing
  --data SPEC      fashion-mnist:DIR or cifar10:DIR [fashion-mnist:/usr/share/datasets/fashion-mnist]
  --epochs E       passes over the training subset [10; --quick 2]
  --subset N       training images [10000; --quick 1000]
  --test-subset N  test images evaluated after each epoch [all; --quick 1000]
  --seed S         [0]
  --lambdas a,b,c  identity-prior strengths for plain-56, each run started exactly at the
                   prior's centre [1e-4,1e-3,1e-2; --quick 1e-3]
  --prior-noise S  one more prior run, at the middle strength, started at the centre plus
                   Gaussian noise of deviation S (0 or none: not run) [0.01]
  --random-start yes|no
                   one more prior run, at the middle strength, started from the seeded
                   He initialisation instead of the centre: the prior without its start [yes]
  --threads T      threads of each run [1]
  --jobs J         runs at a time [2]
  --out DIR        run directories [target/degradation; --quick target/degradation-quick]
  --report DIR     where degradation.md and .svg go [docs; --quick: the --out directory]
  --torch PATH     also run PATH curve ... (../shared/tools/torch-train-baseline) for
                   cifar-plain56, cifar-resnet56, cifar-resnet20 and cifar-plain56 with the
                   identity prior at the middle --lambdas strength, beside ours, one at a time";

const DEFAULT_DATA: &str = "fashion-mnist:/usr/share/datasets/fashion-mnist";
/// The start noise of the extra identity-prior run: enough to break the exact Dirac start's
/// channel-by-channel isolation (see the report's notes), small beside the centre's 1s.
const DEFAULT_NOISE: &str = "0.01";
/// Examples per step (He et al.'s CIFAR recipe).
const BATCH: u32 = 128;
/// The file of the study's settings and wall time, in the out directory.
const STUDY_FILE: &str = "study.json";
/// The per-epoch metrics each run writes in its directory.
const METRICS: &str = "metrics.jsonl";
const NOTES_OPEN: &str = "<!-- notes -->";
const NOTES_CLOSE: &str = "<!-- /notes -->";
const NOTES_PLACEHOLDER: &str = "_Commentary goes here; the text between the notes markers is kept when the report is regenerated._";
/// The PyTorch reference curves without a prior (`--torch`): its architecture and the net of
/// ours it matches. [`torch_curves`] adds plain-56 with the identity prior.
const TORCH_ARCHS: [(&str, &str); 3] = [
    ("cifar-plain56", "plain-56"),
    ("cifar-resnet56", "resnet-56"),
    ("cifar-resnet20", "resnet-20"),
];
/// Below this many percentage points, one seed's difference is called small in the reading.
const SMALL_POINTS: f64 = 1.0;

// ---------------------------------------------------------------------------------------------
// Settings

/// The settings of a study.
#[derive(Debug, Clone, PartialEq)]
pub struct Study {
    /// `--data` as passed to `resnet train` (relative directories made absolute).
    pub data: String,
    pub epochs: u32,
    pub subset: u32,
    /// Evaluate on the first N test images only (`resnet train --test-subset`).
    pub test_subset: Option<u32>,
    pub seed: u64,
    /// The identity prior's strengths, as given (`1e-3`): passed on verbatim.
    pub lambdas: Vec<String>,
    /// The start noise of the extra prior run (`--prior-noise`, as given), or none.
    pub noise: Option<String>,
    /// One more prior run from a random start (`--random-start`).
    pub random_start: bool,
    pub threads: u32,
    pub jobs: u32,
    pub out: PathBuf,
    pub report: PathBuf,
    pub torch: Option<PathBuf>,
    pub quick: bool,
    pub report_only: bool,
    /// The flags given on the command line (to record the command, and to know which settings
    /// `--report-only` takes from the study's record instead).
    pub given: Vec<String>,
    pub argv: Vec<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// `kind:DIR` with a relative DIR made absolute, so a resumed run sees the same string from
/// any working directory.
fn absolute_data(spec: &str) -> String {
    match spec.split_once(':') {
        Some((kind @ ("fashion-mnist" | "cifar10"), dir)) => {
            format!("{kind}:{}", absolute(Path::new(dir)).display())
        }
        _ => spec.to_string(),
    }
}

fn parse_num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag} takes a number, got {v:?}"))
}

/// Identity-prior strengths from `a,b,c`: each a finite non-negative number.
fn parse_lambdas(v: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for l in v.split(',').map(str::trim).filter(|l| !l.is_empty()) {
        match l.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => {}
            _ => {
                return Err(format!(
                    "--lambdas takes non-negative numbers separated by commas, got {l:?}"
                ));
            }
        }
        if out.iter().any(|o| path_label(o) == path_label(l)) {
            return Err(format!("--lambdas names {l} twice"));
        }
        out.push(l.to_string());
    }
    if out.is_empty() {
        return Err("--lambdas needs at least one value".into());
    }
    Ok(out)
}

/// `yes` or `no`.
fn parse_yes_no(flag: &str, v: &str) -> Result<bool, String> {
    match v.trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(format!("{flag} takes yes or no, got {v:?}")),
    }
}

/// `--prior-noise`: a positive deviation, or 0 / `none` for no extra run.
fn parse_noise(v: &str) -> Result<Option<String>, String> {
    let v = v.trim();
    if v == "none" {
        return Ok(None);
    }
    match v.parse::<f64>() {
        Ok(0.0) => Ok(None),
        Ok(x) if x.is_finite() && x > 0.0 => Ok(Some(v.to_string())),
        _ => Err(format!(
            "--prior-noise takes a non-negative number (0 or none: no extra run), got {v:?}"
        )),
    }
}

pub fn parse_args(args: &[String]) -> Result<Study, String> {
    let quick = args.iter().any(|a| a == "--quick");
    let root = root();
    let mut s = Study {
        data: DEFAULT_DATA.to_string(),
        epochs: if quick { 2 } else { 10 },
        subset: if quick { 1000 } else { 10000 },
        test_subset: quick.then_some(1000),
        seed: 0,
        lambdas: if quick {
            vec!["1e-3".into()]
        } else {
            vec!["1e-4".into(), "1e-3".into(), "1e-2".into()]
        },
        noise: Some(DEFAULT_NOISE.into()),
        random_start: true,
        threads: 1,
        jobs: 2,
        out: root.join(if quick {
            "target/degradation-quick"
        } else {
            "target/degradation"
        }),
        report: PathBuf::new(),
        torch: None,
        quick,
        report_only: false,
        given: Vec::new(),
        argv: args.to_vec(),
    };
    let mut report = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        match flag {
            "--quick" => continue,
            "--report-only" => {
                s.report_only = true;
                continue;
            }
            _ => {}
        }
        let Some(v) = inline.or_else(|| it.next().cloned()) else {
            return Err(format!("{flag} needs a value\nusage: {USAGE}"));
        };
        match flag {
            "--data" => s.data = absolute_data(&v),
            "--epochs" => s.epochs = parse_num(flag, &v)?,
            "--subset" => s.subset = parse_num(flag, &v)?,
            "--test-subset" => s.test_subset = Some(parse_num(flag, &v)?),
            "--seed" => s.seed = parse_num(flag, &v)?,
            "--lambdas" => s.lambdas = parse_lambdas(&v)?,
            "--prior-noise" => s.noise = parse_noise(&v)?,
            "--random-start" => s.random_start = parse_yes_no(flag, &v)?,
            "--threads" => s.threads = parse_num(flag, &v)?,
            "--jobs" => s.jobs = parse_num(flag, &v)?,
            "--out" => s.out = absolute(Path::new(&v)),
            "--report" => report = Some(absolute(Path::new(&v))),
            "--torch" => s.torch = Some(absolute(Path::new(&v))),
            _ => return Err(format!("unknown option {flag:?}\nusage: {USAGE}")),
        }
        s.given.push(flag.to_string());
    }
    for (flag, v) in [
        ("--epochs", s.epochs),
        ("--subset", s.subset),
        ("--threads", s.threads),
        ("--jobs", s.jobs),
    ] {
        if v == 0 {
            return Err(format!("{flag} must be at least 1"));
        }
    }
    s.report = report.unwrap_or_else(|| {
        if quick {
            s.out.clone()
        } else {
            root.join("docs")
        }
    });
    Ok(s)
}

/// Whether the data is there; if not, how to get it.
pub fn check_data(spec: &str) -> Result<(), String> {
    match spec.split_once(':') {
        Some(("fashion-mnist", dir)) => {
            let d = Path::new(dir);
            let has = |f: &str| d.join(f).is_file() || d.join(format!("{f}.gz")).is_file();
            if has("train-images-idx3-ubyte") && has("train-labels-idx1-ubyte") {
                Ok(())
            } else {
                Err(format!(
                    "Fashion-MNIST is not in {dir} (expected train-images-idx3-ubyte[.gz] and the other IDX files).\n\
                     Install it with `apt-get install dataset-fashion-mnist` (it goes to \
                     /usr/share/datasets/fashion-mnist), or pass --data fashion-mnist:DIR"
                ))
            }
        }
        Some(("cifar10", dir)) if !Path::new(dir).is_dir() => Err(format!(
            "the CIFAR-10 directory {dir} does not exist (pass --data cifar10:DIR with the binary batches)"
        )),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// The nets

/// One PyTorch reference curve (`--torch`).
#[derive(Debug, Clone, PartialEq)]
pub struct TorchCurve {
    /// `torch-train-baseline curve --arch`.
    pub arch: &'static str,
    /// `--prior identity --prior-lambda L`, as for our net of the same directory.
    pub lambda: Option<String>,
    /// The directory of our matching net (see [`nets`]).
    pub net: String,
}

impl TorchCurve {
    /// Its curve's file in the out directory: `torch-cifar-plain56-identity-1e-3.jsonl`.
    pub fn file(&self) -> String {
        match &self.lambda {
            Some(l) => format!("torch-{}-identity-{}.jsonl", self.arch, path_label(l)),
            None => format!("torch-{}.jsonl", self.arch),
        }
    }
}

/// The PyTorch curves of a study: plain-56, ResNet-56, ResNet-20 and plain-56 with the identity
/// prior at the middle of the given strengths (one prior run: each takes as long as ours).
pub fn torch_curves(lambdas: &[String]) -> Vec<TorchCurve> {
    let mut v: Vec<TorchCurve> = TORCH_ARCHS
        .iter()
        .map(|&(arch, net)| TorchCurve {
            arch,
            lambda: None,
            net: net.to_string(),
        })
        .collect();
    if let Some(l) = lambdas.get(lambdas.len() / 2) {
        v.push(TorchCurve {
            arch: "cifar-plain56",
            lambda: Some(l.clone()),
            net: format!("plain56-identity-{}", path_label(l)),
        });
    }
    v
}

/// One net of the study.
#[derive(Debug, Clone, PartialEq)]
pub struct Net {
    /// How the report names it: `plain-56 + identity prior λ=1e-3`.
    pub name: String,
    /// Its directory under the out directory: `plain56-identity-1e-3`.
    pub dir: String,
    /// `resnet train --model`.
    pub model: &'static str,
    /// `--prior identity --prior-lambda L`.
    pub lambda: Option<String>,
    /// `--prior-noise S`: the prior's run that starts at the centre plus Gaussian noise.
    pub noise: Option<String>,
    /// `--prior-init random`: the prior's run that starts from the seeded He initialisation.
    pub random_start: bool,
}

impl Net {
    /// How the reading names a prior run: `λ=1e-3`, `λ=1e-3 with start noise 0.01` or
    /// `λ=1e-3 from a random start`.
    fn prior_label(&self) -> String {
        let l = self.lambda.as_deref().unwrap_or("?");
        match (&self.noise, self.random_start) {
            (Some(n), _) => format!("λ={l} with start noise {n}"),
            (None, true) => format!("λ={l} from a random start"),
            (None, false) => format!("λ={l}"),
        }
    }
}

/// A string made safe for a file name.
fn path_label(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The nets of a study, in the order of the report: plain-20/56, ResNet-20/56, plain-56 with
/// the identity prior at each strength started exactly at the centre, and (with `noise`) once
/// more at the middle strength started at the centre plus Gaussian noise of that deviation,
/// and (with `random_start`) once more at the middle strength from the seeded initialisation.
pub fn nets(lambdas: &[String], noise: Option<&str>, random_start: bool) -> Vec<Net> {
    let base = |name: &str, model| Net {
        name: name.to_string(),
        dir: name.to_string(),
        model,
        lambda: None,
        noise: None,
        random_start: false,
    };
    let mut v = vec![
        base("plain-20", "cifar-plain20"),
        base("plain-56", "cifar-plain56"),
        base("resnet-20", "cifar-resnet20"),
        base("resnet-56", "cifar-resnet56"),
    ];
    for l in lambdas {
        v.push(Net {
            name: format!("plain-56 + identity prior λ={l}"),
            dir: format!("plain56-identity-{}", path_label(l)),
            model: "cifar-plain56",
            lambda: Some(l.clone()),
            noise: None,
            random_start: false,
        });
    }
    if let (Some(n), Some(l)) = (noise, lambdas.get(lambdas.len() / 2)) {
        v.push(Net {
            name: format!("plain-56 + identity prior λ={l}, start noise {n}"),
            dir: format!("plain56-identity-{}-noise-{}", path_label(l), path_label(n)),
            model: "cifar-plain56",
            lambda: Some(l.clone()),
            noise: Some(n.to_string()),
            random_start: false,
        });
    }
    if let (true, Some(l)) = (random_start, lambdas.get(lambdas.len() / 2)) {
        v.push(Net {
            name: format!("plain-56 + identity prior λ={l}, random start"),
            dir: format!("plain56-identity-{}-random", path_label(l)),
            model: "cifar-plain56",
            lambda: Some(l.clone()),
            noise: None,
            random_start: true,
        });
    }
    v
}

impl Study {
    /// The nets of this study ([`nets`]).
    pub fn nets(&self) -> Vec<Net> {
        nets(&self.lambdas, self.noise.as_deref(), self.random_start)
    }
}

// ---------------------------------------------------------------------------------------------
// JSON lines

/// A value of a flat JSON object.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Num(f64),
    Str(String),
    Bool(bool),
    Null,
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        match self.peek() {
            Some(x) if x == c => {
                self.i += 1;
                Ok(())
            }
            Some(x) => Err(format!(
                "expected '{}' at column {}, found '{}'",
                c as char,
                self.i + 1,
                x as char
            )),
            None => Err(format!("expected '{}' at the end of the line", c as char)),
        }
    }

    fn literal(&mut self, word: &str) -> bool {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| format!("bad \\u escape at column {}", self.i + 1))?;
        self.i += 4;
        Ok(h)
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat(b'"')?;
        let mut out = String::new();
        loop {
            let start = self.i;
            // '"' and '\\' never occur inside a multi-byte UTF-8 sequence.
            while self
                .peek()
                .is_some_and(|c| c != b'"' && c != b'\\' && c >= 0x20)
            {
                self.i += 1;
            }
            out.push_str(std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?);
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let e = self.peek().ok_or("unterminated string")?;
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let mut c = self.hex4()?;
                            if (0xd800..0xdc00).contains(&c) && self.literal("\\u") {
                                let lo = self.hex4()?;
                                if (0xdc00..0xe000).contains(&lo) {
                                    c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
                                }
                            }
                            out.push(char::from_u32(c).unwrap_or('\u{fffd}'));
                        }
                        other => {
                            return Err(format!(
                                "bad escape '\\{}' at column {}",
                                other as char, self.i
                            ));
                        }
                    }
                }
                Some(_) => {
                    return Err(format!(
                        "control character in a string at column {}",
                        self.i + 1
                    ));
                }
                None => return Err("unterminated string".into()),
            }
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        match self.peek() {
            Some(b'"') => return self.string().map(Json::Str),
            Some(b'{' | b'[') => {
                return Err(format!(
                    "nested objects and arrays are not supported (column {})",
                    self.i + 1
                ));
            }
            _ => {}
        }
        // Python's json.dumps writes NaN and Infinity for such floats: accept them.
        for (word, v) in [
            ("null", Json::Null),
            ("true", Json::Bool(true)),
            ("false", Json::Bool(false)),
            ("NaN", Json::Num(f64::NAN)),
            ("Infinity", Json::Num(f64::INFINITY)),
            ("-Infinity", Json::Num(f64::NEG_INFINITY)),
        ] {
            if self.literal(word) {
                return Ok(v);
            }
        }
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
        {
            self.i += 1;
        }
        let tok = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        tok.parse::<f64>().map(Json::Num).map_err(|_| {
            if tok.is_empty() {
                format!("expected a value at column {}", start + 1)
            } else {
                format!("bad number {tok:?} at column {}", start + 1)
            }
        })
    }

    /// An object; `field` gets each key and parses (or skips) its value.
    fn object(
        &mut self,
        field: &mut dyn FnMut(&mut Self, String) -> Result<(), String>,
    ) -> Result<(), String> {
        self.eat(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            let k = self.string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            field(self, k)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(c) => {
                    return Err(format!(
                        "expected ',' or '}}' at column {}, found '{}'",
                        self.i + 1,
                        c as char
                    ));
                }
                None => return Err("unterminated object".into()),
            }
        }
    }

    /// The fields of a flat object.
    fn flat_object(&mut self) -> Result<Vec<(String, Json)>, String> {
        let mut out = Vec::new();
        self.object(&mut |p, k| {
            let v = p.value()?;
            out.push((k, v));
            Ok(())
        })?;
        Ok(out)
    }

    /// The scalar fields of an object, its nested values passed over.
    fn scalar_fields(&mut self) -> Result<Vec<(String, Json)>, String> {
        let mut out = Vec::new();
        self.object(&mut |p, k| {
            if matches!(p.peek(), Some(b'{' | b'[')) {
                p.skip(0)
            } else {
                let v = p.value()?;
                out.push((k, v));
                Ok(())
            }
        })?;
        Ok(out)
    }

    /// Passes over any value, nested ones too.
    fn skip(&mut self, depth: usize) -> Result<(), String> {
        if depth > 64 {
            return Err("nested too deep".into());
        }
        match self.peek() {
            Some(b'{') => self.object(&mut |p, _| p.skip(depth + 1)),
            Some(b'[') => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.skip(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(format!("bad array at column {}", self.i + 1)),
                    }
                }
            }
            _ => self.value().map(drop),
        }
    }

    fn end(&mut self) -> Result<(), String> {
        self.ws();
        if self.i == self.s.len() {
            Ok(())
        } else {
            Err(format!(
                "characters after the object at column {}",
                self.i + 1
            ))
        }
    }
}

/// Parses one flat JSON object, `{"key": number|string|true|false|null, ...}`, into its
/// fields in order.
pub fn parse_object(line: &str) -> Result<Vec<(String, Json)>, String> {
    let mut p = Parser {
        s: line.as_bytes(),
        i: 0,
    };
    p.ws();
    let out = p.flat_object()?;
    p.end()?;
    Ok(out)
}

/// The scalar fields of one JSON object, nested values (lists, objects) passed over.
pub fn parse_scalar_fields(text: &str) -> Result<Vec<(String, Json)>, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    p.ws();
    let out = p.scalar_fields()?;
    p.end()?;
    Ok(out)
}

/// The `__metadata__` of a safetensors header (a JSON object whose other values, the
/// tensors' descriptions, are nested and skipped).
pub fn safetensors_metadata(header: &str) -> Result<Vec<(String, Json)>, String> {
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    let mut meta = Vec::new();
    p.ws();
    p.object(&mut |p, k| {
        if k == "__metadata__" {
            meta = p.flat_object()?;
            Ok(())
        } else {
            p.skip(0)
        }
    })?;
    p.end()?;
    Ok(meta)
}

/// One epoch of a training curve: ours (`metrics.jsonl`) or PyTorch's (fields it lacks are
/// `None`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpochRow {
    pub epoch: u32,
    pub train_loss: Option<f64>,
    pub train_error: Option<f64>,
    pub test_loss: Option<f64>,
    pub test_error: Option<f64>,
    pub seconds: Option<f64>,
    pub images_per_s: Option<f64>,
    /// The test-set evaluation after the epoch (not part of `seconds`), when logged.
    pub eval_seconds: Option<f64>,
}

fn row_from(fields: &[(String, Json)]) -> Result<EpochRow, String> {
    let num = |k: &str| -> Result<Option<f64>, String> {
        match fields.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Num(x)) => Ok(Some(*x)),
            Some(other) => Err(format!("field {k:?} is not a number: {other:?}")),
        }
    };
    let epoch = match num("epoch")? {
        Some(e) if e >= 1.0 && e.fract() == 0.0 && e <= f64::from(u32::MAX) => e as u32,
        Some(e) => return Err(format!("field \"epoch\" is not a positive integer: {e}")),
        None => return Err("no \"epoch\" field".into()),
    };
    Ok(EpochRow {
        epoch,
        train_loss: num("train_loss")?,
        train_error: num("train_error")?,
        test_loss: num("test_loss")?,
        test_error: num("test_error")?,
        seconds: num("seconds")?,
        images_per_s: num("images_per_s")?,
        eval_seconds: num("eval_seconds")?,
    })
}

/// The epochs of a JSON-lines curve, sorted by epoch; when an epoch appears twice (a run
/// resumed after it was logged) the later line wins. Blank lines are skipped; a last line
/// without its newline that does not parse (a write cut short) is ignored.
pub fn parse_curve(text: &str) -> Result<Vec<EpochRow>, String> {
    let mut rows = BTreeMap::new();
    let lines: Vec<&str> = text.split('\n').collect();
    for (n, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let cut_short = n + 1 == lines.len(); // no newline after it
        match parse_object(line).and_then(|f| row_from(&f)) {
            Ok(r) => {
                rows.insert(r.epoch, r);
            }
            Err(_) if cut_short => {}
            Err(e) => return Err(format!("line {}: {e}", n + 1)),
        }
    }
    Ok(rows.into_values().collect())
}

/// A curve file's epochs; `None` when there is no such file.
pub fn read_curve(path: &Path) -> Result<Option<Vec<EpochRow>>, String> {
    match fs::read_to_string(path) {
        Ok(t) => parse_curve(&t)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Whether a curve has every epoch 1..=epochs.
pub fn complete(rows: &[EpochRow], epochs: u32) -> bool {
    (1..=epochs).all(|e| rows.iter().any(|r| r.epoch == e))
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

// ---------------------------------------------------------------------------------------------
// The study's record: settings and wall time, kept in OUT/study.json

/// What OUT/study.json holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    data: String,
    subset: u32,
    epochs: u32,
    seed: u64,
    lambdas: Vec<String>,
    /// `None` in a record written before `--prior-noise` existed.
    noise: Option<Option<String>>,
    /// `None` in a record written before `--random-start` existed.
    random_start: Option<bool>,
    threads: u32,
    jobs: u32,
    command: String,
    wall_seconds: f64,
    invocations: u32,
}

impl Record {
    fn of(s: &Study) -> Self {
        Record {
            data: s.data.clone(),
            subset: s.subset,
            epochs: s.epochs,
            seed: s.seed,
            lambdas: s.lambdas.clone(),
            noise: Some(s.noise.clone()),
            random_start: Some(s.random_start),
            threads: s.threads,
            jobs: s.jobs,
            command: shell_join(
                ["cargo", "xtask", "degradation"]
                    .iter()
                    .map(|a| a.to_string())
                    .chain(s.argv.iter().cloned()),
            ),
            wall_seconds: 0.0,
            invocations: 0,
        }
    }

    fn to_json(&self) -> String {
        format!(
            "{{\"data\": {}, \"subset\": {}, \"epochs\": {}, \"seed\": {}, \"batch\": {BATCH}, \"lambdas\": {}, \"prior_noise\": {}, \"random_start\": {}, \"threads\": {}, \"jobs\": {}, \"command\": {}, \"wall_seconds\": {:.1}, \"invocations\": {}}}\n",
            json_str(&self.data),
            self.subset,
            self.epochs,
            self.seed,
            json_str(&self.lambdas.join(",")),
            json_str(
                self.noise
                    .as_ref()
                    .and_then(|n| n.as_deref())
                    .unwrap_or("none")
            ),
            self.random_start.unwrap_or(false),
            self.threads,
            self.jobs,
            json_str(&self.command),
            self.wall_seconds,
            self.invocations
        )
    }

    fn read(out: &Path) -> Result<Option<Self>, String> {
        let path = out.join(STUDY_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let bad = |e: String| format!("{}: {e}", path.display());
        let f = parse_object(text.trim()).map_err(bad)?;
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let s = |k: &str| match get(k) {
            Some(Json::Str(s)) => Ok(s),
            _ => Err(bad(format!("no string field {k:?}"))),
        };
        let n = |k: &str| match get(k) {
            Some(Json::Num(x)) if x >= 0.0 => Ok(x),
            _ => Err(bad(format!("no number field {k:?}"))),
        };
        Ok(Some(Record {
            data: s("data")?,
            subset: n("subset")? as u32,
            epochs: n("epochs")? as u32,
            seed: n("seed")? as u64,
            lambdas: s("lambdas")?.split(',').map(str::to_string).collect(),
            noise: match get("prior_noise") {
                Some(Json::Str(n)) => Some(parse_noise(&n).map_err(bad)?),
                _ => None,
            },
            random_start: match get("random_start") {
                Some(Json::Bool(b)) => Some(b),
                _ => None,
            },
            threads: n("threads")? as u32,
            jobs: n("jobs")? as u32,
            command: s("command")?,
            wall_seconds: n("wall_seconds")?,
            invocations: n("invocations")? as u32,
        }))
    }

    fn write(&self, out: &Path) -> Result<(), String> {
        write_atomic(&out.join(STUDY_FILE), &self.to_json())
    }
}

fn write_atomic(path: &Path, text: &str) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn shell_quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:,=+-@%".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

fn shell_join(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `--report-only` takes the settings it was not given from the study's record.
fn settings_from_record(s: &mut Study, r: &Record) {
    let given = |f: &str| s.given.iter().any(|g| g == f);
    if !given("--data") {
        s.data = r.data.clone();
    }
    if !given("--subset") {
        s.subset = r.subset;
    }
    if !given("--epochs") {
        s.epochs = r.epochs;
    }
    if !given("--seed") {
        s.seed = r.seed;
    }
    if !given("--lambdas") {
        s.lambdas = r.lambdas.clone();
    }
    if let (false, Some(n)) = (given("--prior-noise"), &r.noise) {
        s.noise = n.clone();
    }
    if let (false, Some(b)) = (given("--random-start"), r.random_start) {
        s.random_start = b;
    }
    if !given("--threads") {
        s.threads = r.threads;
    }
    if !given("--jobs") {
        s.jobs = r.jobs;
    }
}

// ---------------------------------------------------------------------------------------------
// Running

/// One process to run: a net of ours or a PyTorch curve.
#[derive(Debug, Clone)]
pub struct Job {
    pub label: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Where its per-epoch JSON lines appear.
    pub curve: PathBuf,
    /// Its stdout: appended to, or (a PyTorch curve, which is its stdout) truncated.
    pub stdout: PathBuf,
    pub truncate_stdout: bool,
    /// Its stderr, appended to.
    pub stderr: PathBuf,
    /// PyTorch runs go one at a time: the first creates a virtual environment.
    pub torch: bool,
}

fn has_checkpoints(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("checkpoint-step") && n.ends_with(".safetensors")
        })
    })
}

/// The runs still to do, each net's state decided from its directory: complete (skipped),
/// with checkpoints (`--resume`), or new (`--out`). Also returns a line per skipped run.
pub fn plan(s: &Study, resnet: &Path) -> Result<(Vec<Job>, Vec<String>), String> {
    let mut jobs = Vec::new();
    let mut skipped = Vec::new();
    let mut all = s.nets();
    // The 56-layer nets take about three times as long: start them first.
    all.sort_by_key(|n| !n.model.ends_with("56"));
    for net in all {
        let dir = s.out.join(&net.dir);
        let metrics = dir.join(METRICS);
        if let Some(rows) = read_curve(&metrics)?
            && complete(&rows, s.epochs)
        {
            skipped.push(format!(
                "{}: complete ({} epochs in {}), skipped",
                net.name,
                s.epochs,
                shown(&metrics)
            ));
            continue;
        }
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let resume = has_checkpoints(&dir);
        if !resume && metrics.exists() {
            // Metrics without a checkpoint to continue from: a run that died in its first
            // epoch. Keep them aside; the new run starts its file afresh.
            let stale = dir.join("metrics.jsonl.stale");
            fs::rename(&metrics, &stale)
                .map_err(|e| format!("cannot move {} aside: {e}", metrics.display()))?;
            eprintln!(
                "{}: {} had no checkpoint to resume from; moved to {}",
                net.name,
                shown(&metrics),
                shown(&stale)
            );
        }
        let mut args: Vec<String> = vec!["train".into()];
        let d = dir.display().to_string();
        for (k, v) in [
            ("--data", s.data.clone()),
            ("--model", net.model.to_string()),
            ("--epochs", s.epochs.to_string()),
            ("--batch", BATCH.to_string()),
            ("--subset", s.subset.to_string()),
            ("--seed", s.seed.to_string()),
            ("--threads", s.threads.to_string()),
            (if resume { "--resume" } else { "--out" }, d),
        ] {
            args.push(k.into());
            args.push(v);
        }
        if let Some(n) = s.test_subset {
            args.extend(["--test-subset".into(), n.to_string()]);
        }
        if let Some(l) = &net.lambda {
            args.extend(["--prior".into(), "identity".into()]);
            args.extend(["--prior-lambda".into(), l.clone()]);
        }
        // Where the run starts: for a new run only (a resumed one continues from its
        // checkpoint, and `resnet train` refuses start flags with --resume).
        if let (false, Some(n)) = (resume, &net.noise) {
            args.extend(["--prior-noise".into(), n.clone()]);
        }
        if !resume && net.random_start {
            args.extend(["--prior-init".into(), "random".into()]);
        }
        jobs.push(Job {
            label: if resume {
                format!("{} (resumed)", net.name)
            } else {
                net.name.clone()
            },
            program: resnet.to_path_buf(),
            args,
            curve: metrics,
            stdout: dir.join("stdout.log"),
            truncate_stdout: false,
            stderr: dir.join("stderr.log"),
            torch: false,
        });
    }
    if let Some(torch) = &s.torch {
        for t in torch_curves(&s.lambdas) {
            let file = t.file();
            let label = match &t.lambda {
                Some(l) => format!("PyTorch {} + identity prior λ={l}", t.arch),
                None => format!("PyTorch {}", t.arch),
            };
            let curve = s.out.join(&file);
            if let Some(rows) = read_curve(&curve)?
                && complete(&rows, s.epochs)
            {
                skipped.push(format!("{label}: complete, skipped"));
                continue;
            }
            let mut args: Vec<String> = [
                "curve",
                "--arch",
                t.arch,
                "--data",
                &s.data,
                "--epochs",
                &s.epochs.to_string(),
                "--subset",
                &s.subset.to_string(),
                "--seed",
                &s.seed.to_string(),
                "--threads",
                "1",
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            if let Some(l) = &t.lambda {
                args.extend(["--prior", "identity", "--prior-lambda", l].map(String::from));
            }
            jobs.push(Job {
                label,
                program: torch.clone(),
                args,
                curve: curve.clone(),
                stdout: curve,
                truncate_stdout: true,
                stderr: s
                    .out
                    .join(format!("{}.stderr.log", file.trim_end_matches(".jsonl"))),
                torch: true,
            });
        }
    }
    Ok((jobs, skipped))
}

fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

/// A path as the report and the progress lines show it: relative to the workspace if inside.
fn shown(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

/// The last `n` lines of a file from byte `from` on.
fn tail(path: &Path, from: u64, n: usize) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(bytes.get(from as usize..).unwrap_or_default());
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn pct(x: Option<f64>) -> String {
    x.map_or("–".to_string(), |x| format!("{:.2}", 100.0 * x))
}

/// A training loss: 4 decimals, or 4 significant digits in exponent form from 10 000 up (the
/// identity prior's term reaches 1e7).
fn loss(x: Option<f64>) -> String {
    x.map_or("–".to_string(), |x| {
        if x.abs() >= 1e4 {
            format!("{x:.3e}")
        } else {
            format!("{x:.4}")
        }
    })
}

/// Runs one job to its end, printing its epochs as they appear.
fn execute(job: &Job, index: usize, total: usize, epochs: u32, t0: Instant) -> Result<(), String> {
    let open = |p: &Path, truncate: bool| {
        fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(!truncate)
            .truncate(truncate)
            .open(p)
            .map_err(|e| format!("{}: cannot open {}: {e}", job.label, p.display()))
    };
    let stdout = open(&job.stdout, job.truncate_stdout)?;
    let stderr = open(&job.stderr, false)?;
    let from = stderr.metadata().map(|m| m.len()).unwrap_or(0);
    let tag = format!("[{index}/{total}]");
    eprintln!(
        "{tag} started {} at +{}: {} {}",
        job.label,
        duration(t0.elapsed().as_secs_f64()),
        job.program.display(),
        shell_join(job.args.iter().cloned())
    );
    let started = Instant::now();
    let mut child = Command::new(&job.program)
        .args(&job.args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("{}: cannot run {}: {e}", job.label, job.program.display()))?;
    let mut seen = read_curve(&job.curve)
        .ok()
        .flatten()
        .map_or(0, |r| r.iter().map(|r| r.epoch).max().unwrap_or(0));
    let mut size = None;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("{}: waiting for it: {e}", job.label))?
        {
            break status;
        }
        std::thread::sleep(Duration::from_millis(500));
        let now = fs::metadata(&job.curve).map(|m| m.len()).ok();
        if now == size {
            continue;
        }
        size = now;
        if let Ok(Some(rows)) = read_curve(&job.curve) {
            let before = seen;
            for r in rows.iter().filter(|r| r.epoch > before) {
                eprintln!(
                    "{tag} {}: epoch {}/{epochs}, train error {}%, test error {}% ({})",
                    job.label,
                    r.epoch,
                    pct(r.train_error),
                    pct(r.test_error),
                    duration(started.elapsed().as_secs_f64())
                );
                seen = r.epoch;
            }
        }
    };
    let took = duration(started.elapsed().as_secs_f64());
    if !status.success() {
        let last = tail(&job.stderr, from, 20);
        eprintln!(
            "{tag} FAILED {} ({status}) after {took}; the last lines of {}:\n{last}",
            job.label,
            shown(&job.stderr)
        );
        return Err(format!(
            "{} failed ({status}); its stderr is in {}",
            job.label,
            shown(&job.stderr)
        ));
    }
    let rows = read_curve(&job.curve)?.unwrap_or_default();
    if !complete(&rows, epochs) {
        return Err(format!(
            "{} exited successfully but {} has {} of {epochs} epochs",
            job.label,
            shown(&job.curve),
            rows.len()
        ));
    }
    let last = rows.iter().find(|r| r.epoch == epochs);
    eprintln!(
        "{tag} finished {} in {took}: train error {}%, test error {}%",
        job.label,
        pct(last.and_then(|r| r.train_error)),
        pct(last.and_then(|r| r.test_error))
    );
    Ok(())
}

/// Runs the jobs, `parallel` at a time (PyTorch ones one at a time), every one of them even
/// when some fail; returns the failures.
pub fn run_jobs(jobs: Vec<Job>, parallel: usize, epochs: u32) -> Vec<String> {
    struct Queue {
        pending: VecDeque<(usize, Job)>,
        torch_busy: bool,
    }
    let total = jobs.len();
    let t0 = Instant::now();
    let queue = Mutex::new(Queue {
        pending: jobs.into_iter().enumerate().collect(),
        torch_busy: false,
    });
    let wake = Condvar::new();
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..parallel.clamp(1, total.max(1)) {
            scope.spawn(|| {
                loop {
                    let (i, job) = {
                        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                        loop {
                            if q.pending.is_empty() {
                                return;
                            }
                            let busy = q.torch_busy;
                            if let Some(pos) = q.pending.iter().position(|(_, j)| !j.torch || !busy)
                            {
                                let (i, j) = q.pending.remove(pos).expect("position is in range");
                                q.torch_busy |= j.torch;
                                break (i, j);
                            }
                            q = wake.wait(q).unwrap_or_else(|e| e.into_inner());
                        }
                    };
                    let r = execute(&job, i + 1, total, epochs, t0);
                    if job.torch {
                        queue.lock().unwrap_or_else(|e| e.into_inner()).torch_busy = false;
                        wake.notify_all();
                    }
                    if let Err(e) = r {
                        failures.lock().unwrap_or_else(|e| e.into_inner()).push(e);
                    }
                }
            });
        }
    });
    failures.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// The `resnet` binary, built in release mode; its path from cargo's own messages, so a
/// CARGO_TARGET_DIR (or a configured target directory) is respected.
fn build_resnet() -> Result<PathBuf, String> {
    eprintln!("$ cargo build --release -p resnet-cli");
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-p",
            "resnet-cli",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err("cargo build --release -p resnet-cli failed".into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let from_messages = text
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
        .filter_map(|l| {
            l.split("\"executable\":\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(PathBuf::from)
        })
        .find(|p| p.file_stem().is_some_and(|n| n == "resnet"));
    let path = from_messages.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(|d| absolute(Path::new(&d)))
            .unwrap_or_else(|| root().join("target"));
        target
            .join("release")
            .join(format!("resnet{}", std::env::consts::EXE_SUFFIX))
    });
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("the resnet binary is not at {}", path.display()))
    }
}

/// Trains what is missing (with `resnet` as the binary), then writes the report.
pub fn run_study(s: &Study, resnet: &Path) -> Result<(), String> {
    fs::create_dir_all(&s.out).map_err(|e| format!("cannot create {}: {e}", s.out.display()))?;
    let mut record = Record::of(s);
    if let Some(old) = Record::read(&s.out)? {
        let ours = (&record.data, record.subset, record.epochs, record.seed);
        let theirs = (&old.data, old.subset, old.epochs, old.seed);
        if ours != theirs {
            return Err(format!(
                "{} holds a study with other settings (data {}, subset {}, epochs {}, seed {}); \
                 its runs cannot be continued with these. Pass those settings, another --out, or \
                 delete the directory",
                shown(&s.out),
                old.data,
                old.subset,
                old.epochs,
                old.seed
            ));
        }
        record.wall_seconds = old.wall_seconds;
        record.invocations = old.invocations;
    }
    let (jobs, skipped) = plan(s, resnet)?;
    for line in &skipped {
        eprintln!("{line}");
    }
    let mut failures = Vec::new();
    if !jobs.is_empty() {
        record.write(&s.out)?;
        eprintln!(
            "{} run{} to do, {} at a time, {} thread{} each; runs in {}",
            jobs.len(),
            if jobs.len() == 1 { "" } else { "s" },
            s.jobs,
            s.threads,
            if s.threads == 1 { "" } else { "s" },
            shown(&s.out)
        );
        let t0 = Instant::now();
        failures = run_jobs(jobs, s.jobs as usize, s.epochs);
        let wall = t0.elapsed().as_secs_f64();
        record.wall_seconds += wall;
        record.invocations += 1;
        record.write(&s.out)?;
        eprintln!(
            "study: {} of wall time this time, {} in all",
            duration(wall),
            duration(record.wall_seconds)
        );
    }
    if !failures.is_empty() {
        return Err(format!(
            "{} run{} failed (the others are complete or resumable; rerun to continue, or \
             --report-only to report what there is):\n  {}",
            failures.len(),
            if failures.len() == 1 { "" } else { "s" },
            failures.join("\n  ")
        ));
    }
    write_report(s)
}

pub fn run(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{HELP}\n\nusage: {USAGE}");
        return Ok(());
    }
    let mut s = parse_args(args)?;
    if s.report_only {
        if let Some(r) = Record::read(&s.out)? {
            settings_from_record(&mut s, &r);
        }
        return write_report(&s);
    }
    check_data(&s.data)?;
    if let Some(t) = &s.torch {
        if !t.is_file() {
            return Err(format!("--torch {}: no such file", t.display()));
        }
        if !s.data.starts_with("fashion-mnist:") {
            return Err("--torch: the PyTorch reference reads fashion-mnist:DIR only".into());
        }
    }
    let resnet = build_resnet()?;
    run_study(&s, &resnet)
}

// ---------------------------------------------------------------------------------------------
// The numbers

/// The recipe the latest checkpoint in `dir` records (its `recipe` metadata, a flat JSON
/// object); `None` when the directory has no checkpoint.
pub fn checkpoint_recipe(dir: &Path) -> Result<Option<Vec<(String, Json)>>, String> {
    use std::io::Read as _;
    let latest = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let step: u64 = n
                .strip_prefix("checkpoint-step")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((step, e.path()))
        })
        .max_by_key(|(step, _)| *step);
    let Some((_, path)) = latest else {
        return Ok(None);
    };
    let bad = |e: String| format!("{}: {e}", shown(&path));
    let mut f = fs::File::open(&path).map_err(|e| bad(e.to_string()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| bad(format!("no safetensors header ({e})")))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(bad(format!("a header of {len} bytes")));
    }
    let mut header = vec![0; len as usize];
    f.read_exact(&mut header)
        .map_err(|e| bad(format!("the header is cut short ({e})")))?;
    let header = String::from_utf8(header).map_err(|e| bad(e.to_string()))?;
    let meta = safetensors_metadata(&header).map_err(bad)?;
    match meta.iter().find(|(k, _)| k == "recipe") {
        Some((_, Json::Str(r))) => parse_scalar_fields(r)
            .map(Some)
            .map_err(|e| bad(format!("the recipe metadata: {e}"))),
        _ => Err(bad("no recipe metadata".into())),
    }
}

/// Where a checkpoint's recipe differs from the study's: the fields it records among lr,
/// momentum, weight_decay, batch, seed, subset, nesterov, model, prior, prior_lambda,
/// prior_init, prior_noise, schedule and augment.
pub fn recipe_mismatches(s: &Study, net: &Net, recipe: &[(String, Json)]) -> Vec<String> {
    let get = |k: &str| recipe.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    let mut out = Vec::new();
    let lambda = net.lambda.as_deref().and_then(|l| l.parse::<f64>().ok());
    let mut numbers = vec![
        ("lr", 0.1),
        ("momentum", 0.9),
        ("weight_decay", 1e-4),
        ("batch", f64::from(BATCH)),
        ("seed", s.seed as f64),
        ("subset", f64::from(s.subset)),
    ];
    numbers.extend(lambda.map(|l| ("prior_lambda", l)));
    for (k, want) in numbers {
        match get(k) {
            Some(Json::Num(x)) if (x - want).abs() <= 1e-9 * want.abs() => {}
            Some(Json::Num(x)) => out.push(format!("{k} {x} (expected {want})")),
            Some(Json::Null) => out.push(format!("{k} null (expected {want})")),
            _ => {}
        }
    }
    let prior = if net.lambda.is_some() {
        "identity"
    } else {
        "zero"
    };
    for (k, want) in [("model", net.model), ("prior", prior), ("schedule", "he")] {
        if let Some(Json::Str(x)) = get(k)
            && x != want
        {
            out.push(format!("{k} {x} (expected {want})"));
        }
    }
    // Where a prior run started (recorded since `resnet train` wrote `prior_init`).
    if net.lambda.is_some() {
        let init = if net.random_start { "random" } else { "centre" };
        if let Some(Json::Str(x)) = get("prior_init")
            && x != init
        {
            out.push(format!("prior_init {x} (expected {init})"));
        }
        let noise = net
            .noise
            .as_deref()
            .map_or(Some(0.0), |n| n.parse::<f64>().ok());
        if let (Some(Json::Num(x)), Some(want), false) =
            (get("prior_noise"), noise, net.random_start)
            && (x - want).abs() > 1e-9 * want.abs()
        {
            out.push(format!("prior_noise {x} (expected {want})"));
        }
    }
    if let Some(Json::Bool(true)) = get("nesterov") {
        out.push("nesterov true (expected false)".into());
    }
    if let Some(Json::Bool(false)) = get("augment") {
        out.push("augment false (expected true)".into());
    }
    out
}

/// Each net's recipe as its latest checkpoint records it, against the study's: a line per net
/// that differs or cannot be checked, and whether any differs.
fn recipe_check(s: &Study) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    let mut differs = false;
    for n in s.nets() {
        match checkpoint_recipe(&s.out.join(&n.dir)) {
            Ok(None) => lines.push(format!("{}: not checked, no checkpoint", n.name)),
            Err(e) => lines.push(format!("{}: not checked, {e}", n.name)),
            Ok(Some(r)) => {
                let m = recipe_mismatches(s, &n, &r);
                if !m.is_empty() {
                    differs = true;
                    lines.push(format!("**{}: {}**", n.name, m.join(", ")));
                }
            }
        }
    }
    (lines, differs)
}

/// The degradation gap: train_err(plain-56) − train_err(plain-20).
pub fn gap(plain20: f64, plain56: f64) -> f64 {
    plain56 - plain20
}

/// The fraction of the gap a net closes: (train_err(plain-56) − train_err(net)) / G; `None`
/// when there is no gap (G <= 0).
pub fn fraction_closed(plain20: f64, plain56: f64, net: f64) -> Option<f64> {
    let g = gap(plain20, plain56);
    (g > 0.0).then(|| (plain56 - net) / g)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The curves of a study as found in its out directory.
#[derive(Debug, Default)]
pub struct Curves {
    /// Ours, by net directory.
    pub ours: BTreeMap<String, Vec<EpochRow>>,
    /// PyTorch's, by the name of our matching net.
    pub torch: BTreeMap<String, Vec<EpochRow>>,
}

impl Curves {
    pub fn load(s: &Study) -> Result<Self, String> {
        let mut c = Curves::default();
        for n in s.nets() {
            if let Some(rows) = read_curve(&s.out.join(&n.dir).join(METRICS))?
                && !rows.is_empty()
            {
                c.ours.insert(n.dir, rows);
            }
        }
        for t in torch_curves(&s.lambdas) {
            if let Some(rows) = read_curve(&s.out.join(t.file()))?
                && !rows.is_empty()
            {
                c.torch.insert(t.net, rows);
            }
        }
        Ok(c)
    }

    fn rows(&self, dir: &str) -> &[EpochRow] {
        self.ours.get(dir).map_or(&[], Vec::as_slice)
    }
}

fn at(rows: &[EpochRow], epoch: u32) -> Option<&EpochRow> {
    rows.iter().find(|r| r.epoch == epoch)
}

/// A net's training error at the study's last epoch.
fn final_train(c: &Curves, dir: &str, epochs: u32) -> Option<f64> {
    at(c.rows(dir), epochs).and_then(|r| r.train_error)
}

fn final_test(c: &Curves, dir: &str, epochs: u32) -> Option<f64> {
    at(c.rows(dir), epochs).and_then(|r| r.test_error)
}

/// Percentage points, signed.
fn points(x: f64) -> String {
    format!("{:.2}", 100.0 * x)
}

fn fraction_text(f: f64) -> String {
    format!("{f:.2} ({:.0}%)", 100.0 * f)
}

// ---------------------------------------------------------------------------------------------
// The report

/// A Markdown table; the columns after the first right-aligned if `numeric`.
fn table(out: &mut String, head: &[String], rows: &[Vec<String>], numeric: bool) {
    let _ = writeln!(out, "| {} |", head.join(" | "));
    let _ = writeln!(
        out,
        "|{}",
        head.iter()
            .enumerate()
            .map(|(i, _)| if i == 0 || !numeric { "---|" } else { "---:|" })
            .collect::<String>()
    );
    for r in rows {
        let _ = writeln!(out, "| {} |", r.join(" | "));
    }
    out.push('\n');
}

fn data_name(spec: &str) -> String {
    match spec.split_once(':') {
        Some(("fashion-mnist", _)) => "Fashion-MNIST".into(),
        Some(("cifar10", _)) => "CIFAR-10".into(),
        Some((k, _)) => k.to_string(),
        None => spec.to_string(),
    }
}

/// Steps per epoch: `resnet train` drops a dataset epoch's last incomplete batch, as He et
/// al.'s recipe in PyTorch does.
fn steps_per_epoch(subset: u32) -> u32 {
    (subset / BATCH).max(1)
}

/// The report, Markdown, with an empty notes section.
pub fn render_report(s: &Study, c: &Curves, record: Option<&Record>) -> String {
    let all = s.nets();
    let e = s.epochs;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# The degradation problem: plain nets, residual nets, and an identity prior\n"
    );
    let _ = writeln!(
        o,
        "He et al. 2016 (section 4.1, figure 4): a 56-layer plain net trains to a higher error than a \
         20-layer one, while ResNets gain from depth. Here the same comparison runs on the CPU with \
         `resnet train`, plus plain-56 with weight decay toward the identity (a Dirac kernel) \
         instead of toward zero: does MAP with the identity as the prior's mode rescue the deep \
         plain net?\n"
    );
    let _ = writeln!(
        o,
        "Generated by `cargo xtask degradation` (`xtask/src/degradation.rs`) from the runs' \
         `metrics.jsonl`; regenerate it from them with `cargo xtask degradation --report-only`.\n"
    );

    // How it was run.
    let _ = writeln!(o, "## How it was run\n");
    if let Some(r) = record {
        let _ = writeln!(o, "Command: `{}`\n", r.command);
    }
    let lambdas = s.lambdas.join(",");
    let _ = writeln!(
        o,
        "Every setting spelled out: `cargo xtask degradation --data {} --subset {}{} --epochs {} --seed {} --lambdas {lambdas} --threads {} --jobs {}`\n",
        shell_quote(&s.data),
        s.subset,
        s.test_subset
            .map_or_else(String::new, |n| format!(" --test-subset {n}")),
        e,
        s.seed,
        s.threads,
        s.jobs
    );
    let steps = steps_per_epoch(s.subset);
    let recipe = [
        ("data", format!("{} (`{}`)", data_name(&s.data), s.data)),
        (
            "training subset",
            format!("{} images (`--subset {}`)", s.subset, s.subset),
        ),
        (
            "test images",
            s.test_subset.map_or_else(
                || "the whole test split, after every epoch".to_owned(),
                |n| {
                    format!(
                        "the first {n} of the test split (`--test-subset {n}`), after every epoch"
                    )
                },
            ),
        ),
        (
            "epochs",
            format!("{e} ({steps} steps each, {} in all)", steps * e),
        ),
        ("batch", BATCH.to_string()),
        (
            "learning rate",
            "0.1, divided by 10 at 50% and at 75% of the steps".into(),
        ),
        ("momentum", "0.9".into()),
        ("weight decay", "1e-4 (toward zero)".into()),
        (
            "augmentation",
            "pad 4, random crop, horizontal flip (`resnet train`'s default for datasets)".into(),
        ),
        (
            "identity prior",
            format!(
                "λ/2 ‖W − Dirac‖² on every 3x3 conv but the stem, in place of their weight decay; \
                 those convs start exactly at the Dirac kernel (`resnet train`'s default \
                 `--prior-init centre`); λ ∈ {{{}}}{}",
                s.lambdas.join(", "),
                s.nets()
                    .iter()
                    .filter_map(|n| match (&n.noise, n.random_start) {
                        (Some(noise), _) => Some(format!(
                            "; once more at λ = {} starting at the Dirac kernel plus Gaussian \
                             noise of deviation {noise} (`--prior-noise`)",
                            n.lambda.as_deref().unwrap_or("?"),
                        )),
                        (None, true) => Some(format!(
                            "; once more at λ = {} starting from the seeded He initialisation, \
                             as the nets without a prior (`--prior-init random`): the prior's pull \
                             without its start",
                            n.lambda.as_deref().unwrap_or("?"),
                        )),
                        (None, false) => None,
                    })
                    .collect::<String>()
            ),
        ),
        ("seed", format!("{} (one seed for every net)", s.seed)),
        ("threads", format!("{} per run", s.threads)),
        ("jobs", format!("{} runs at a time", s.jobs)),
        (
            "wall time of the study",
            match record {
                Some(r) if r.invocations > 0 => format!(
                    "{} ({} invocation{} that trained)",
                    duration(r.wall_seconds),
                    r.invocations,
                    if r.invocations == 1 { "" } else { "s" }
                ),
                _ => "not recorded".into(),
            },
        ),
    ];
    table(
        &mut o,
        &["setting".into(), "value".into()],
        &recipe
            .into_iter()
            .map(|(k, v)| vec![k.to_string(), v])
            .collect::<Vec<_>>(),
        false,
    );
    let (check, differs) = recipe_check(s);
    if check.is_empty() {
        let _ = writeln!(
            o,
            "Recipe check: every run's latest checkpoint records this recipe (of lr, momentum, \
             weight decay, batch, seed, subset, schedule, augmentation, model, prior, λ and the prior's start, the fields \
             it records).\n"
        );
    } else {
        let _ = writeln!(
            o,
            "Recipe check against each run's latest checkpoint (lr, momentum, weight decay, batch, \
             seed, subset, schedule, augmentation, model, prior, λ, the prior's start; the fields it records){}:\n",
            if differs {
                ": **some runs did not train with the recipe above**"
            } else {
                ""
            }
        );
        for l in &check {
            let _ = writeln!(o, "- {l}");
        }
        o.push('\n');
    }
    let _ = writeln!(o, "Each net is one run of:\n\n```text");
    for n in &all {
        let mut line = format!(
            "resnet train --data {} --model {} --epochs {e} --batch {BATCH} --subset {} --seed {} --threads {} --out {}",
            shell_quote(&s.data),
            n.model,
            s.subset,
            s.seed,
            s.threads,
            shell_quote(&shown(&s.out.join(&n.dir)))
        );
        if let Some(l) = &n.lambda {
            let _ = write!(line, " --prior identity --prior-lambda {l}");
        }
        if let Some(noise) = &n.noise {
            let _ = write!(line, " --prior-noise {noise}");
        }
        if n.random_start {
            let _ = write!(line, " --prior-init random");
        }
        let _ = writeln!(o, "{line}");
    }
    let _ = writeln!(o, "```\n");
    let missing: Vec<String> = all
        .iter()
        .filter(|n| !complete(c.rows(&n.dir), e))
        .map(|n| {
            let k = c.rows(&n.dir).iter().filter(|r| r.epoch <= e).count();
            format!("{} ({k} of {e} epochs)", n.name)
        })
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(
            o,
            "**Incomplete:** {}. Their final numbers are missing below.\n",
            missing.join(", ")
        );
    }

    // Per-epoch tables.
    let _ = writeln!(
        o,
        "![training and test error against epochs](degradation.svg)\n"
    );
    let mut head = vec!["epoch".to_string()];
    head.extend(all.iter().map(|n| n.name.clone()));
    for (title, pick) in [
        (
            "Training error (%) per epoch",
            (|r: &EpochRow| r.train_error) as fn(&EpochRow) -> Option<f64>,
        ),
        ("Test error (%) per epoch", |r: &EpochRow| r.test_error),
    ] {
        let _ = writeln!(o, "## {title}\n");
        let rows: Vec<Vec<String>> = (1..=e)
            .map(|ep| {
                let mut r = vec![ep.to_string()];
                r.extend(
                    all.iter()
                        .map(|n| pct(at(c.rows(&n.dir), ep).and_then(pick))),
                );
                r
            })
            .collect();
        table(&mut o, &head, &rows, true);
    }

    // Summary.
    let _ = writeln!(o, "## Summary\n");
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|n| {
            let rows = c.rows(&n.dir);
            let best = rows
                .iter()
                .filter_map(|r| r.test_error.map(|t| (t, r.epoch)))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let secs: f64 = rows
                .iter()
                .map(|r| r.seconds.unwrap_or(0.0) + r.eval_seconds.unwrap_or(0.0))
                .sum();
            vec![
                n.name.clone(),
                pct(final_train(c, &n.dir, e)),
                pct(final_test(c, &n.dir, e)),
                best.map_or("–".into(), |(t, ep)| {
                    format!("{:.2} (epoch {ep})", 100.0 * t)
                }),
                median(rows.iter().filter_map(|r| r.images_per_s).collect())
                    .map_or("–".into(), |x| format!("{x:.1}")),
                if rows.iter().any(|r| r.seconds.is_some()) {
                    format!("{secs:.0}")
                } else {
                    "–".into()
                },
            ]
        })
        .collect();
    table(
        &mut o,
        &[
            "net",
            "final train error (%)",
            "final test error (%)",
            "best test error (%)",
            "images/s (median)",
            "seconds",
        ]
        .map(String::from),
        &rows,
        true,
    );
    let _ = writeln!(
        o,
        "Final = epoch {e}. images/s: the median over the epochs of each epoch's `images_per_s`; \
         seconds: the sum over the epochs of `seconds` (the training steps) and `eval_seconds` \
         (the test-set evaluation after each epoch, when logged).\n"
    );

    // The gap.
    let _ = writeln!(o, "## The degradation gap\n");
    let p20 = final_train(c, "plain-20", e);
    let p56 = final_train(c, "plain-56", e);
    let mut closers: Vec<&Net> = all.iter().filter(|n| n.lambda.is_some()).collect();
    let reference = all.iter().find(|n| n.dir == "resnet-56");
    closers.extend(reference);
    match (p20, p56) {
        (Some(a), Some(b)) => {
            let g = gap(a, b);
            let _ = writeln!(
                o,
                "G = train error(plain-56) − train error(plain-20) at epoch {e} = {}% − {}% = **{} points**{}\n",
                points(b),
                points(a),
                points(g),
                if g <= 0.0 {
                    ": **n/a: no gap.** plain-56 did not train worse than plain-20 in this run, so \
                     there is no degradation here for a prior to close"
                } else {
                    ""
                }
            );
            let rows: Vec<Vec<String>> = closers
                .iter()
                .map(|n| {
                    let t = final_train(c, &n.dir, e);
                    let f = match t {
                        None => "n/a: incomplete".to_string(),
                        Some(t) => fraction_closed(a, b, t)
                            .map_or("n/a: no gap".to_string(), fraction_text),
                    };
                    let name = if n.lambda.is_none() {
                        format!("{} (reference)", n.name)
                    } else {
                        n.name.clone()
                    };
                    vec![name, pct(t), f]
                })
                .collect();
            table(
                &mut o,
                &["net", "final train error (%)", "fraction of the gap closed"].map(String::from),
                &rows,
                true,
            );
            let _ = writeln!(
                o,
                "Fraction closed = (train error(plain-56) − train error(net)) / G: 0 is no better than \
                 plain-56, 1 is as good as plain-20, above 1 better than plain-20, below 0 worse than \
                 plain-56.\n"
            );
        }
        _ => {
            let _ = writeln!(
                o,
                "n/a: plain-20 and plain-56 need epoch {e} for the gap; run the study to the end.\n"
            );
        }
    }

    // Reading.
    let _ = writeln!(o, "## Reading\n");
    for line in reading(s, c) {
        let _ = writeln!(o, "- {line}");
    }
    o.push('\n');

    // PyTorch.
    if !c.torch.is_empty() {
        let _ = writeln!(o, "## Beside PyTorch\n");
        let _ = writeln!(
            o,
            "`torch-train-baseline curve --arch A --data {} --epochs {e} --subset {} --seed {} --threads 1` \
             (`../shared/tools/torch_train.py`): the same recipe in PyTorch, an independent \
             implementation (its own data order and augmentation; it drops each epoch's last \
             partial batch), so the curves should agree in shape, not digit for digit. Dashed in the \
             figure.\n",
            shell_quote(&s.data),
            s.subset,
            s.seed
        );
        let all = s.nets();
        for tc in torch_curves(&s.lambdas) {
            let Some(t) = c.torch.get(&tc.net) else {
                continue;
            };
            let ours = c.rows(&tc.net);
            let title = all
                .iter()
                .find(|n| n.dir == tc.net)
                .map_or(tc.net.as_str(), |n| n.name.as_str());
            let _ = writeln!(o, "### {title}\n");
            let rows: Vec<Vec<String>> = (1..=e)
                .map(|ep| {
                    let a = at(ours, ep);
                    let b = at(t, ep);
                    vec![
                        ep.to_string(),
                        pct(a.and_then(|r| r.train_error)),
                        pct(b.and_then(|r| r.train_error)),
                        pct(a.and_then(|r| r.test_error)),
                        pct(b.and_then(|r| r.test_error)),
                        loss(a.and_then(|r| r.train_loss)),
                        loss(b.and_then(|r| r.train_loss)),
                    ]
                })
                .collect();
            table(
                &mut o,
                &[
                    "epoch",
                    "train error (%), ours",
                    "train error (%), PyTorch",
                    "test error (%), ours",
                    "test error (%), PyTorch",
                    "train loss, ours",
                    "train loss, PyTorch",
                ]
                .map(String::from),
                &rows,
                true,
            );
        }
    }

    let _ = writeln!(o, "## Notes\n");
    let _ = writeln!(o, "{NOTES_OPEN}\n{NOTES_PLACEHOLDER}\n{NOTES_CLOSE}");
    o
}

/// The "Reading" bullets: what the numbers say, and no more.
fn reading(s: &Study, c: &Curves) -> Vec<String> {
    let e = s.epochs;
    let mut out = Vec::new();
    let tr = |d: &str| final_train(c, d, e);
    let te = |d: &str| final_test(c, d, e);
    let small = |d: f64| {
        if d.abs() < SMALL_POINTS / 100.0 {
            format!(
                " — a difference under {SMALL_POINTS} point, which one seed cannot tell from noise"
            )
        } else {
            String::new()
        }
    };
    let test_line = |a: &str, b: &str| match (te(a), te(b)) {
        (Some(x), Some(y)) => format!(" Test error: {}% against {}%.", points(x), points(y)),
        _ => String::new(),
    };
    // Degradation.
    let (p20, p56) = (tr("plain-20"), tr("plain-56"));
    match (p20, p56) {
        (Some(a), Some(b)) if b > a => out.push(format!(
            "Did plain-56 train worse than plain-20? **Yes**: final training error {}% against {}%, \
             a gap of {} points{}.{}",
            points(b),
            points(a),
            points(b - a),
            small(b - a),
            test_line("plain-56", "plain-20")
        )),
        (Some(a), Some(b)) => out.push(format!(
            "Did plain-56 train worse than plain-20? **No**: final training error {}% against {}% \
             (plain-56 − plain-20 = {} points){}. This run shows no degradation, so there is no gap \
             for the prior to close; the fractions above are n/a.{}",
            points(b),
            points(a),
            points(b - a),
            small(b - a),
            test_line("plain-56", "plain-20")
        )),
        _ => out.push(format!(
            "Did plain-56 train worse than plain-20? Cannot say: one of them has no epoch {e} yet."
        )),
    }
    // ResNet-56 against ResNet-20.
    match (tr("resnet-20"), tr("resnet-56")) {
        (Some(a), Some(b)) => out.push(format!(
            "Did ResNet-56 beat ResNet-20? On training error **{}**: {}% against {}%{}.{}",
            if b < a { "yes" } else { "no" },
            points(b),
            points(a),
            small(b - a),
            match (te("resnet-56"), te("resnet-20")) {
                (Some(x), Some(y)) => format!(
                    " On test error **{}**: {}% against {}%{}.",
                    if x < y { "yes" } else { "no" },
                    points(x),
                    points(y),
                    small(x - y)
                ),
                _ => String::new(),
            }
        )),
        _ => out.push(format!(
            "Did ResNet-56 beat ResNet-20? Cannot say: one of them has no epoch {e} yet."
        )),
    }
    // Residual against plain at depth 56.
    if let (Some(a), Some(b)) = (p56, tr("resnet-56")) {
        out.push(format!(
            "At 56 layers, ResNet-56 ended at {}% training error, plain-56 at {}%: the shortcuts {} \
             by {} points{}.",
            points(b),
            points(a),
            if b < a { "helped" } else { "did not help" },
            points((a - b).abs()),
            small(a - b)
        ));
    }
    // The prior.
    let priors: Vec<(Net, f64)> = s
        .nets()
        .into_iter()
        .filter(|n| n.lambda.is_some())
        .filter_map(|n| tr(&n.dir).map(|t| (n, t)))
        .collect();
    match (p20, p56) {
        (Some(a), Some(b)) if b > a && !priors.is_empty() => {
            let (best, t) = priors
                .iter()
                .min_by(|x, y| x.1.total_cmp(&y.1))
                .expect("not empty");
            let f = fraction_closed(a, b, *t).expect("a gap");
            let how = if f >= 1.0 {
                format!(
                    "all of it and more ({:.0}%): it trained to a lower error than plain-20",
                    100.0 * f
                )
            } else if f > 0.0 {
                format!("{:.0}% of it", 100.0 * f)
            } else {
                format!("none of it ({:.0}%): it trained no better than plain-56", 100.0 * f)
            };
            let lam = best.prior_label();
            let mut line = format!(
                "Which prior run closed most of the gap? {lam} closed {how} (training error {}% \
                 against plain-56's {}%).",
                points(*t),
                points(b)
            );
            if let Some(r) = tr("resnet-56") {
                let rf = fraction_closed(a, b, r).expect("a gap");
                let _ = write!(
                    line,
                    " ResNet-56, the reference, closed {:.0}%.",
                    100.0 * rf
                );
            }
            if b - a < SMALL_POINTS / 100.0 {
                let _ = write!(
                    line,
                    " The gap itself is under {SMALL_POINTS} point, so these fractions are mostly noise."
                );
            }
            if priors.len() > 1 {
                let others: Vec<String> = priors
                    .iter()
                    .map(|(n, t)| {
                        format!(
                            "{} {}",
                            n.prior_label(),
                            fraction_closed(a, b, *t).map_or("n/a".into(), |f| format!(
                                "{:.0}%",
                                100.0 * f
                            ))
                        )
                    })
                    .collect();
                let _ = write!(line, " Each run: {}.", others.join(", "));
            }
            out.push(line);
        }
        (Some(_), Some(b)) if !priors.is_empty() => {
            let each: Vec<String> = priors
                .iter()
                .map(|(n, t)| {
                    format!(
                        "{}: {}% ({:+.2} points)",
                        n.prior_label(),
                        points(*t),
                        100.0 * (t - b)
                    )
                })
                .collect();
            out.push(format!(
                "The prior, read against plain-56 directly since there is no gap: final training \
                 error {}.",
                each.join(", ")
            ));
        }
        _ => out.push(
            "The prior: no identity-prior run has reached the last epoch yet (or plain-20/plain-56 \
             has not)."
                .into(),
        ),
    }
    // The prior's pull against its start: the random-start run beside the centre-start ones.
    if let Some((rand, t)) = priors.iter().find(|(n, _)| n.random_start)
        && let (Some(a), Some(b)) = (p20, p56)
        && b > a
    {
        let f = fraction_closed(a, b, *t).expect("a gap");
        let started: Vec<(String, f64)> = priors
            .iter()
            .filter(|(n, _)| !n.random_start && n.lambda == rand.lambda)
            .map(|(n, t)| (n.prior_label(), fraction_closed(a, b, *t).expect("a gap")))
            .collect();
        let best = started
            .iter()
            .map(|x| x.1)
            .fold(f64::NEG_INFINITY, f64::max);
        let mut line = format!(
            "The prior without its start: {} ended at {}% training error, closing {:.0}% of the \
             gap",
            rand.prior_label(),
            points(*t),
            100.0 * f
        );
        if !started.is_empty() {
            let each: Vec<String> = started
                .iter()
                .map(|(l, f)| format!("{l} {:.0}%", 100.0 * f))
                .collect();
            let _ = write!(line, "; started at the centre: {}", each.join(", "));
            let verdict = if f < 0.1 {
                "the pull toward the identity did little by itself: what helped was starting there"
            } else if f >= 0.8 * best {
                "the pull toward the identity did most of it by itself"
            } else {
                "both the start and the pull mattered"
            };
            let _ = write!(line, ". On this seed, {verdict}");
        }
        line.push('.');
        out.push(line);
    }
    if recipe_check(s).1 {
        out.push(
            "**Some runs' checkpoints record another recipe than the one stated above** (see the \
             recipe check): the comparison is not like for like until they are rerun."
                .into(),
        );
    }
    out.push(format!(
        "Caution: one seed ({}), {} training images, {} epochs ({} steps; the paper trains 64k \
         iterations on CIFAR-10). Each number above is a single measurement; differences of a point \
         or so could reverse with another seed. Rerun with other `--seed` values, more data or more \
         epochs before drawing conclusions. Training errors are as the runs log them in \
         `metrics.jsonl`.",
        s.seed,
        s.subset,
        e,
        steps_per_epoch(s.subset) * e
    ));
    out
}

/// `new` with the notes of `old` (the text between the notes markers) carried over. If `old`
/// has the opening marker but lost the closing one, everything after the opening marker is
/// kept, so no human text is dropped.
pub fn merge_notes(old: Option<&str>, new: &str) -> String {
    let Some(old) = old else {
        return new.to_string();
    };
    let Some(start) = old.find(NOTES_OPEN).map(|i| i + NOTES_OPEN.len()) else {
        return new.to_string();
    };
    let notes = match old[start..].find(NOTES_CLOSE) {
        Some(end) => &old[start..start + end],
        None => old[start..].trim_end(),
    };
    let (Some(a), Some(b)) = (new.find(NOTES_OPEN), new.find(NOTES_CLOSE)) else {
        return new.to_string();
    };
    let a = a + NOTES_OPEN.len();
    let mut out = String::with_capacity(new.len() + notes.len());
    out.push_str(&new[..a]);
    out.push_str(notes);
    if !notes.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&new[b..]);
    out
}

/// Writes `degradation.md` and `degradation.svg` into the report directory.
pub fn write_report(s: &Study) -> Result<(), String> {
    let c = Curves::load(s)?;
    if c.ours.is_empty() {
        return Err(format!(
            "no metrics in {}: run the study first (cargo xtask degradation{})",
            shown(&s.out),
            if s.quick { " --quick" } else { "" }
        ));
    }
    let record = Record::read(&s.out)?;
    fs::create_dir_all(&s.report)
        .map_err(|e| format!("cannot create {}: {e}", s.report.display()))?;
    let md = s.report.join("degradation.md");
    let old = fs::read_to_string(&md).ok();
    let text = merge_notes(old.as_deref(), &render_report(s, &c, record.as_ref()));
    write_atomic(&md, &text)?;
    let svg = s.report.join("degradation.svg");
    write_atomic(&svg, &render_svg(s, &c))?;
    eprintln!("wrote {} and {}", shown(&md), shown(&svg));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The figure

/// The 1-2-5 ticks a log axis may use, in percent.
const LOG_TICKS: [f64; 10] = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0];

/// A log-scale axis of errors in percent, its ends on ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogAxis {
    pub lo: f64,
    pub hi: f64,
}

impl LogAxis {
    /// The smallest tick-to-tick range holding every value (values below 0.1% drawn at 0.1%).
    pub fn fit(values: impl IntoIterator<Item = f64>) -> Self {
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.into_iter().filter(|v| v.is_finite()) {
            min = min.min(v);
            max = max.max(v);
        }
        if min > max {
            return LogAxis { lo: 1.0, hi: 100.0 };
        }
        let lo = LOG_TICKS
            .iter()
            .rev()
            .find(|&&t| t <= min)
            .copied()
            .unwrap_or(LOG_TICKS[0]);
        let hi = LOG_TICKS
            .iter()
            .find(|&&t| t >= max)
            .copied()
            .unwrap_or(100.0)
            .max(lo);
        if hi > lo {
            LogAxis { lo, hi }
        } else if lo < 100.0 {
            LogAxis {
                lo,
                hi: *LOG_TICKS.iter().find(|&&t| t > lo).expect("a larger tick"),
            }
        } else {
            LogAxis {
                lo: 50.0,
                hi: 100.0,
            }
        }
    }

    /// The y pixel of `v` percent in a plot area from `top` down `height` pixels.
    pub fn y(&self, v: f64, top: f64, height: f64) -> f64 {
        let v = v.clamp(self.lo, self.hi);
        let t = (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10());
        top + height * (1.0 - t)
    }

    pub fn ticks(&self) -> Vec<f64> {
        LOG_TICKS
            .iter()
            .copied()
            .filter(|&t| t >= self.lo && t <= self.hi)
            .collect()
    }
}

const COLOURS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn tick_label(t: f64) -> String {
    if t >= 1.0 {
        format!("{t:.0}")
    } else {
        format!("{t}")
    }
}

/// Training error (left) and test error (right) against epochs, log y axes; one polyline per
/// net and panel (ours solid, PyTorch's dashed in the same colour), a legend under both.
pub fn render_svg(s: &Study, c: &Curves) -> String {
    let all = s.nets();
    let e = s.epochs.max(1);
    // (name, colour, dashed, rows)
    let mut series: Vec<(String, &str, bool, &[EpochRow])> = Vec::new();
    for (i, n) in all.iter().enumerate() {
        let rows = c.rows(&n.dir);
        if !rows.is_empty() {
            series.push((n.name.clone(), COLOURS[i % COLOURS.len()], false, rows));
        }
    }
    for tc in torch_curves(&s.lambdas) {
        if let (Some(rows), Some(i)) = (
            c.torch.get(&tc.net),
            all.iter().position(|n| n.dir == tc.net),
        ) {
            series.push((
                format!("{} (PyTorch)", all[i].name),
                COLOURS[i % COLOURS.len()],
                true,
                rows,
            ));
        }
    }
    let (pw, ph, top, left, gap) = (400.0, 300.0, 70.0, 70.0, 110.0);
    let width = left + 2.0 * pw + gap + 30.0;
    let cols = 3usize;
    let legend_rows = series.len().div_ceil(cols).max(1);
    let legend_top = top + ph + 62.0;
    let height = legend_top + 20.0 * legend_rows as f64 + 10.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        o,
        "<rect x=\"0\" y=\"0\" width=\"{width:.0}\" height=\"{height:.0}\" fill=\"white\"/>"
    );
    let _ = writeln!(
        o,
        "<text x=\"{:.0}\" y=\"26\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">{}</text>",
        width / 2.0,
        esc(&format!(
            "Degradation: plain vs residual nets, {} ({} images), {} epochs, seed {}",
            data_name(&s.data),
            s.subset,
            s.epochs,
            s.seed
        ))
    );
    type Pick = fn(&EpochRow) -> Option<f64>;
    let panels: [(&str, &str, Pick); 2] = [
        ("Training error", "training error (%)", |r| r.train_error),
        ("Test error", "test error (%)", |r| r.test_error),
    ];
    for (k, (heading, title, pick)) in panels.into_iter().enumerate() {
        let x0 = left + k as f64 * (pw + gap);
        let axis = LogAxis::fit(
            series
                .iter()
                .flat_map(|(_, _, _, rows)| rows.iter().filter_map(pick))
                .map(|v| (100.0 * v).max(LOG_TICKS[0])),
        );
        let x = |ep: u32| {
            if e == 1 {
                x0 + pw / 2.0
            } else {
                x0 + pw * f64::from(ep - 1) / f64::from(e - 1)
            }
        };
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"14\">{}</text>",
            x0 + pw / 2.0,
            top - 14.0,
            heading
        );
        // Grid and y ticks.
        for t in axis.ticks() {
            let y = axis.y(t, top, ph);
            let _ = writeln!(
                o,
                "<line x1=\"{x0:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#dddddd\"/>",
                x0 + pw
            );
            let _ = writeln!(
                o,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                x0 - 6.0,
                y + 4.0,
                tick_label(t)
            );
        }
        // x ticks.
        let step = e.div_ceil(10).max(1);
        for ep in (1..=e).filter(|ep| (ep - 1) % step == 0 || *ep == e) {
            let xx = x(ep);
            let _ = writeln!(
                o,
                "<line x1=\"{xx:.1}\" y1=\"{:.1}\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"#333333\"/>",
                top + ph,
                top + ph + 5.0
            );
            let _ = writeln!(
                o,
                "<text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{ep}</text>",
                top + ph + 18.0
            );
        }
        let _ = writeln!(
            o,
            "<rect x=\"{x0:.1}\" y=\"{top:.1}\" width=\"{pw:.1}\" height=\"{ph:.1}\" fill=\"none\" stroke=\"#333333\"/>"
        );
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">epoch</text>",
            x0 + pw / 2.0,
            top + ph + 36.0
        );
        let _ = writeln!(
            o,
            "<text transform=\"translate({:.1},{:.1}) rotate(-90)\" text-anchor=\"middle\">{} (log scale)</text>",
            x0 - 42.0,
            top + ph / 2.0,
            esc(title)
        );
        for (name, colour, dashed, rows) in &series {
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.epoch <= e)
                .filter_map(|r| {
                    pick(r)
                        .filter(|v| v.is_finite())
                        .map(|v| (x(r.epoch), axis.y(100.0 * v, top, ph)))
                })
                .collect();
            let dash = if *dashed {
                " stroke-dasharray=\"7 4\""
            } else {
                ""
            };
            let _ = writeln!(
                o,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} points=\"{}\"><title>{}</title></polyline>",
                pts.iter()
                    .map(|(a, b)| format!("{a:.1},{b:.1}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                esc(name)
            );
            for (a, b) in &pts {
                let fill = if *dashed { "white" } else { colour };
                let _ = writeln!(
                    o,
                    "<circle cx=\"{a:.1}\" cy=\"{b:.1}\" r=\"2.5\" fill=\"{fill}\" stroke=\"{colour}\"/>"
                );
            }
        }
    }
    // Legend.
    let col_w = (width - 2.0 * left) / cols as f64;
    for (i, (name, colour, dashed, _)) in series.iter().enumerate() {
        let lx = left + (i % cols) as f64 * col_w;
        let ly = legend_top + 20.0 * (i / cols) as f64;
        let dash = if *dashed {
            " stroke-dasharray=\"7 4\""
        } else {
            ""
        };
        let _ = writeln!(
            o,
            "<line x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/>",
            lx + 30.0
        );
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            lx + 38.0,
            ly + 4.0,
            esc(name)
        );
    }
    o.push_str("</svg>\n");
    o
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory.
    fn temp_dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("xtask-degradation-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn study(out: &Path, lambdas: &[&str], epochs: u32) -> Study {
        let mut s = parse_args(&["--quick".to_string()]).unwrap();
        s.out = out.to_path_buf();
        s.report = out.join("report");
        s.lambdas = lambdas.iter().map(|l| l.to_string()).collect();
        s.epochs = epochs;
        // The start-noise and random-start runs have their own tests
        // (`the_start_noise_run`, `the_random_start_run`).
        s.noise = None;
        s.random_start = false;
        s
    }

    fn line(epoch: u32, train: f64, test: f64) -> String {
        format!(
            "{{\"epoch\": {epoch}, \"step\": {}, \"train_loss\": 0.5, \"train_error\": {train}, \"test_loss\": 0.6, \"test_error\": {test}, \"lr\": 0.1, \"seconds\": 10.0, \"images_per_s\": {}}}\n",
            epoch * 16,
            100.0 + f64::from(epoch)
        )
    }

    /// Writes a net's metrics: its training error falls from `first` to `last`, its test error
    /// is 2 points above.
    fn fake_metrics(out: &Path, dir: &str, epochs: u32, first: f64, last: f64) {
        let d = out.join(dir);
        fs::create_dir_all(&d).unwrap();
        let mut t = String::new();
        for ep in 1..=epochs {
            let f = if epochs == 1 {
                1.0
            } else {
                f64::from(ep - 1) / f64::from(epochs - 1)
            };
            let tr = first + (last - first) * f;
            t.push_str(&line(ep, tr, tr + 0.02));
        }
        fs::write(d.join(METRICS), t).unwrap();
    }

    #[test]
    fn parses_flat_objects() {
        let f = parse_object(
            r#" {"a": 1, "b":-2.5e-3 ,"s": "x\"y\\z\u00e9\ud83d\ude00", "n": null, "t": true, "nan": NaN} "#,
        )
        .unwrap();
        assert_eq!(f[0], ("a".into(), Json::Num(1.0)));
        assert_eq!(f[1], ("b".into(), Json::Num(-2.5e-3)));
        assert_eq!(f[2], ("s".into(), Json::Str("x\"y\\zé😀".into())));
        assert_eq!(f[3], ("n".into(), Json::Null));
        assert_eq!(f[4], ("t".into(), Json::Bool(true)));
        assert!(matches!(f[5].1, Json::Num(x) if x.is_nan()));
        assert_eq!(parse_object("{}").unwrap(), vec![]);
        assert_eq!(
            parse_object(r#"{"k": "λ=1e-3"}"#).unwrap()[0].1,
            Json::Str("λ=1e-3".into())
        );
        for bad in [
            "",
            "{",
            r#"{"a": 1"#,
            r#"{"a": 1,}"#,
            r#"{"a" 1}"#,
            r#"{"a": [1]}"#,
            r#"{"a": {"b": 1}}"#,
            r#"{"a": 1} x"#,
            r#"{"a": abc}"#,
            r#"{"a": "unterminated}"#,
            r#"{a: 1}"#,
        ] {
            assert!(parse_object(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn parses_curves() {
        let text = format!(
            "{}\n{}{}{}",
            line(2, 0.3, 0.35).trim_end(),
            line(1, 0.5, 0.55),
            line(2, 0.25, 0.3), // a resumed run logged epoch 2 again: this one wins
            "{\"epoch\": 3, \"train_err"  // cut short, no newline: ignored
        );
        let rows = parse_curve(&text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].epoch, 1);
        assert_eq!(rows[1].train_error, Some(0.25));
        assert_eq!(rows[1].images_per_s, Some(102.0));
        assert!(complete(&rows, 2));
        assert!(!complete(&rows, 3));
        // A bad line in the middle is an error naming the line.
        let e = parse_curve("{\"epoch\": 1}\n{oops}\n{\"epoch\": 2}\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        assert!(parse_curve("{\"train_error\": 0.1}\n").is_err());
        assert!(parse_curve("{\"epoch\": 0}\n").is_err());
        assert!(parse_curve("{\"epoch\": 1, \"train_error\": \"x\"}\n").is_err());
        // PyTorch's lines: fewer fields, strings among them.
        let t = parse_curve(
            "{\"arch\": \"cifar-plain56\", \"prior\": \"zero\", \"epoch\": 1, \"train_loss\": 1.2, \"train_error\": 0.4, \"test_error\": 0.3, \"seconds\": 50.0}\n",
        )
        .unwrap();
        assert_eq!(t[0].test_error, Some(0.3));
        assert_eq!(t[0].test_loss, None);
    }

    #[test]
    fn gap_and_fractions() {
        assert!((gap(0.10, 0.15) - 0.05).abs() < 1e-12);
        let f = fraction_closed(0.10, 0.15, 0.125).unwrap();
        assert!((f - 0.5).abs() < 1e-12);
        assert!((fraction_closed(0.10, 0.15, 0.10).unwrap() - 1.0).abs() < 1e-12);
        assert!(fraction_closed(0.10, 0.15, 0.05).unwrap() > 1.0);
        assert!(fraction_closed(0.10, 0.15, 0.20).unwrap() < 0.0);
        // No gap: no fraction, whether plain-56 is equal or better.
        assert_eq!(fraction_closed(0.10, 0.10, 0.05), None);
        assert_eq!(fraction_closed(0.15, 0.10, 0.05), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn parses_arguments() {
        let a = |v: &[&str]| parse_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let q = a(&["--quick"]).unwrap();
        assert_eq!((q.subset, q.epochs, q.threads, q.jobs), (1000, 2, 1, 2));
        assert_eq!(q.lambdas, vec!["1e-3"]);
        assert!(q.out.ends_with("target/degradation-quick"));
        assert_eq!(q.report, q.out);
        let f = a(&[]).unwrap();
        assert_eq!((f.subset, f.epochs, f.seed), (10000, 10, 0));
        assert_eq!(f.lambdas, vec!["1e-4", "1e-3", "1e-2"]);
        assert!(f.out.ends_with("target/degradation"));
        assert!(f.report.ends_with("docs"));
        assert_eq!(f.data, DEFAULT_DATA);
        let o = a(&[
            "--epochs",
            "3",
            "--subset=500",
            "--lambdas",
            "0.5,2e-3",
            "--seed",
            "7",
            "--jobs",
            "1",
            "--data",
            "cifar10:/x",
        ])
        .unwrap();
        assert_eq!((o.epochs, o.subset, o.seed, o.jobs), (3, 500, 7, 1));
        assert_eq!(o.lambdas, vec!["0.5", "2e-3"]);
        assert_eq!(o.data, "cifar10:/x");
        for bad in [
            &["--epochs"][..],
            &["--epochs", "x"],
            &["--epochs", "0"],
            &["--lambdas", "-1"],
            &["--lambdas", "1e-3,1e-3"],
            &["--lambdas", ""],
            &["--frobnicate", "1"],
            &["--prior-noise", "-0.1"],
            &["--prior-noise", "x"],
            &["--prior-noise", "inf"],
            &["--random-start", "maybe"],
        ] {
            assert!(a(bad).is_err(), "{bad:?}");
        }
        let n = o.nets();
        assert_eq!(n.len(), 8);
        assert_eq!(n[5].dir, "plain56-identity-2e-3");
        assert_eq!(n[5].name, "plain-56 + identity prior λ=2e-3");
        assert_eq!(n[5].noise, None);
        // The start-noise run: the middle strength, the default deviation.
        assert_eq!(n[6].dir, "plain56-identity-2e-3-noise-0.01");
        assert_eq!(n[6].lambda.as_deref(), Some("2e-3"));
        assert_eq!(n[6].noise.as_deref(), Some("0.01"));
        assert!(!n[6].random_start);
        // The random-start run: the middle strength too.
        assert_eq!(n[7].dir, "plain56-identity-2e-3-random");
        assert_eq!(n[7].name, "plain-56 + identity prior λ=2e-3, random start");
        assert_eq!(
            (n[7].lambda.as_deref(), n[7].noise.as_deref()),
            (Some("2e-3"), None)
        );
        assert!(n[7].random_start);
        assert_eq!(f.noise.as_deref(), Some("0.01"));
        assert!(f.random_start);
        assert_eq!(f.nets()[7].lambda.as_deref(), Some("1e-3"));
        assert_eq!(f.nets()[8].lambda.as_deref(), Some("1e-3"));
        assert!(!a(&["--random-start", "no"]).unwrap().random_start);
        assert_eq!(a(&["--random-start", "no"]).unwrap().nets().len(), 8);
        assert_eq!(
            a(&["--prior-noise", "0.05"]).unwrap().noise.as_deref(),
            Some("0.05")
        );
        assert_eq!(a(&["--prior-noise", "0"]).unwrap().noise, None);
        assert_eq!(a(&["--prior-noise", "none"]).unwrap().noise, None);
        assert_eq!(nets(&f.lambdas, None, false).len(), 7);
        assert_eq!(path_label("1/2 x"), "1_2_x");
        assert!(
            check_data("fashion-mnist:/no/such/dir")
                .unwrap_err()
                .contains("apt-get install dataset-fashion-mnist")
        );
        assert!(check_data("cifar10:/no/such/dir").is_err());
    }

    #[test]
    fn plans_skip_resume_and_new_runs() {
        let out = temp_dir("plan");
        let s = study(&out, &["1e-3"], 2);
        fake_metrics(&out, "plain-20", 2, 0.3, 0.2); // complete
        fake_metrics(&out, "plain-56", 1, 0.4, 0.4); // incomplete, with a checkpoint
        fs::write(out.join("plain-56/checkpoint-step16.safetensors"), b"").unwrap();
        fake_metrics(&out, "resnet-20", 1, 0.4, 0.4); // incomplete, no checkpoint
        let (jobs, skipped) = plan(&s, Path::new("/bin/resnet")).unwrap();
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].starts_with("plain-20"));
        assert_eq!(jobs.len(), 4);
        // 56-layer nets first.
        assert!(jobs[0].label.starts_with("plain-56"));
        let args = |label: &str| {
            jobs.iter()
                .find(|j| j.label.starts_with(label))
                .unwrap()
                .args
                .join(" ")
        };
        let p56 = args("plain-56 (resumed)");
        assert!(p56.contains(&format!("--resume {}", out.join("plain-56").display())));
        assert!(!p56.contains("--out"));
        let r20 = args("resnet-20");
        assert!(r20.starts_with("train --data fashion-mnist:"));
        assert!(r20.contains(
            "--model cifar-resnet20 --epochs 2 --batch 128 --subset 1000 --seed 0 --threads 1 --out"
        ));
        assert!(out.join("resnet-20/metrics.jsonl.stale").exists());
        assert!(!out.join("resnet-20/metrics.jsonl").exists());
        let pr = args("plain-56 + identity");
        assert!(pr.contains("--model cifar-plain56"));
        assert!(pr.ends_with("--prior identity --prior-lambda 1e-3"));
        assert!(pr.contains("plain56-identity-1e-3"));
        // PyTorch curves when asked for.
        let mut t = s.clone();
        t.torch = Some("/bin/torch".into());
        let (jobs, _) = plan(&t, Path::new("/bin/resnet")).unwrap();
        let torch: Vec<&Job> = jobs.iter().filter(|j| j.torch).collect();
        assert_eq!(torch.len(), 4);
        assert_eq!(torch[0].args[..3].join(" "), "curve --arch cifar-plain56");
        assert!(
            torch[3]
                .args
                .join(" ")
                .ends_with("--threads 1 --prior identity --prior-lambda 1e-3")
        );
        assert!(
            torch[3]
                .stdout
                .ends_with("torch-cifar-plain56-identity-1e-3.jsonl")
        );
        assert!(
            torch[0]
                .args
                .join(" ")
                .ends_with("--epochs 2 --subset 1000 --seed 0 --threads 1")
        );
        assert!(torch[0].stdout.ends_with("torch-cifar-plain56.jsonl"));
        let _ = fs::remove_dir_all(&out);
    }

    /// plain-56 trains worse than plain-20; the prior closes half the gap.
    fn degraded_study(name: &str) -> (PathBuf, Study) {
        let out = temp_dir(name);
        let s = study(&out, &["1e-4", "1e-3"], 3);
        fake_metrics(&out, "plain-20", 3, 0.40, 0.10);
        let m = out.join("plain-20").join(METRICS);
        let t = fs::read_to_string(&m).unwrap();
        fs::write(&m, t.replace("}\n", ", \"eval_seconds\": 2.5}\n")).unwrap();
        fake_metrics(&out, "plain-56", 3, 0.50, 0.20);
        fake_metrics(&out, "resnet-20", 3, 0.35, 0.09);
        fake_metrics(&out, "resnet-56", 3, 0.30, 0.06);
        fake_metrics(&out, "plain56-identity-1e-4", 3, 0.50, 0.18);
        fake_metrics(&out, "plain56-identity-1e-3", 3, 0.45, 0.15);
        (out, s)
    }

    /// `--prior-noise`: one more prior run at the middle strength, its flags, its record and
    /// its place in the reading.
    #[test]
    fn the_start_noise_run() {
        let (out, mut s) = degraded_study("noise");
        s.noise = Some("0.01".into());
        let (jobs, _) = plan(&s, Path::new("/bin/resnet")).unwrap();
        let job = jobs
            .iter()
            .find(|j| j.label.contains("start noise"))
            .expect("the start-noise run is planned");
        assert!(
            job.args
                .join(" ")
                .ends_with("--prior identity --prior-lambda 1e-3 --prior-noise 0.01"),
            "{:?}",
            job.args
        );
        assert!(
            job.curve
                .ends_with("plain56-identity-1e-3-noise-0.01/metrics.jsonl")
        );
        // Recorded, and taken back by --report-only unless given.
        let r = Record::of(&s);
        fs::create_dir_all(&s.out).unwrap();
        r.write(&s.out).unwrap();
        let back = Record::read(&s.out).unwrap().unwrap();
        assert_eq!(back.noise, Some(Some("0.01".into())));
        let mut t = s.clone();
        t.noise = None;
        settings_from_record(&mut t, &back);
        assert_eq!(t.noise.as_deref(), Some("0.01"));
        // In the reading, named by its start.
        fake_metrics(&out, "plain56-identity-1e-3-noise-0.01", 3, 0.45, 0.12);
        write_report(&s).unwrap();
        let md = fs::read_to_string(s.report.join("degradation.md")).unwrap();
        assert!(
            md.contains("λ=1e-3 with start noise 0.01 closed 80% of it"),
            "{md}"
        );
        assert!(md.contains("Each run: λ=1e-4 20%, λ=1e-3 50%, λ=1e-3 with start noise 0.01 80%."));
        assert!(md.contains("plain-56 + identity prior λ=1e-3, start noise 0.01"));
        assert!(md.contains(
            "plain56-identity-1e-3-noise-0.01 --prior identity --prior-lambda 1e-3 --prior-noise 0.01\n"
        ));
        assert!(md.contains("noise of deviation 0.01 (`--prior-noise`)"));
        // Resumed, it continues from its checkpoint: no start flag (`resnet train` refuses
        // them with --resume).
        let d = out.join("plain56-identity-1e-3-noise-0.01");
        fs::write(d.join(METRICS), line(1, 0.45, 0.47)).unwrap();
        fs::write(d.join("checkpoint-step16.safetensors"), b"").unwrap();
        let (jobs, _) = plan(&s, Path::new("/bin/resnet")).unwrap();
        let job = jobs
            .iter()
            .find(|j| j.label.contains("start noise"))
            .unwrap();
        assert!(job.label.ends_with("(resumed)"), "{}", job.label);
        assert!(job.args.contains(&"--resume".to_string()));
        assert!(
            !job.args.contains(&"--prior-noise".to_string()),
            "{:?}",
            job.args
        );
        let _ = fs::remove_dir_all(&out);
    }

    /// `--random-start`: one more prior run at the middle strength from the seeded
    /// initialisation, its flags (for a new run only), its record and its reading.
    #[test]
    fn the_random_start_run() {
        let (out, mut s) = degraded_study("random");
        s.random_start = true;
        let (jobs, _) = plan(&s, Path::new("/bin/resnet")).unwrap();
        let job = jobs
            .iter()
            .find(|j| j.label.contains("random start"))
            .expect("the random-start run is planned");
        assert!(
            job.args
                .join(" ")
                .ends_with("--prior identity --prior-lambda 1e-3 --prior-init random"),
            "{:?}",
            job.args
        );
        assert!(
            job.curve
                .ends_with("plain56-identity-1e-3-random/metrics.jsonl")
        );
        // Recorded, and taken back by --report-only unless given.
        fs::create_dir_all(&s.out).unwrap();
        Record::of(&s).write(&s.out).unwrap();
        let back = Record::read(&s.out).unwrap().unwrap();
        assert_eq!(back.random_start, Some(true));
        let mut t = s.clone();
        t.random_start = false;
        settings_from_record(&mut t, &back);
        assert!(t.random_start);
        t.random_start = false;
        t.given.push("--random-start".into());
        settings_from_record(&mut t, &back);
        assert!(!t.random_start);
        // A record from before the flag leaves the setting alone.
        let old = Record::of(&s)
            .to_json()
            .replace(", \"random_start\": true", "");
        fs::write(s.out.join(STUDY_FILE), old).unwrap();
        assert_eq!(Record::read(&s.out).unwrap().unwrap().random_start, None);
        // Resumed: no start flag.
        let d = out.join("plain56-identity-1e-3-random");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(METRICS), line(1, 0.45, 0.47)).unwrap();
        fs::write(d.join("checkpoint-step16.safetensors"), b"").unwrap();
        let (jobs, _) = plan(&s, Path::new("/bin/resnet")).unwrap();
        let job = jobs
            .iter()
            .find(|j| j.label.contains("random start"))
            .unwrap();
        assert!(job.args.contains(&"--resume".to_string()));
        assert!(
            !job.args.contains(&"--prior-init".to_string()),
            "{:?}",
            job.args
        );
        // The reading sets it beside the centre start at the same strength: here it closes
        // 5% of the gap against 50%.
        fake_metrics(&out, "plain56-identity-1e-3-random", 3, 0.50, 0.195);
        write_report(&s).unwrap();
        let md = fs::read_to_string(s.report.join("degradation.md")).unwrap();
        assert!(
            md.contains(
                "The prior without its start: λ=1e-3 from a random start ended at 19.50% training \
                 error, closing 5% of the gap; started at the centre: λ=1e-3 50%. On this seed, \
                 the pull toward the identity did little by itself: what helped was starting there."
            ),
            "{md}"
        );
        assert!(md.contains("--prior-lambda 1e-3 --prior-init random\n"));
        assert!(md.contains("(`--prior-init random`): the prior's pull without its start"));
        // When it closes as much as the centre start, the reading says so.
        fake_metrics(&out, "plain56-identity-1e-3-random", 3, 0.50, 0.155);
        write_report(&s).unwrap();
        let md = fs::read_to_string(s.report.join("degradation.md")).unwrap();
        assert!(
            md.contains("the pull toward the identity did most of it by itself"),
            "{md}"
        );
        let _ = fs::remove_dir_all(&out);
    }

    #[test]
    fn report_from_synthetic_metrics() {
        let (out, s) = degraded_study("report");
        write_report(&s).unwrap();
        let md = fs::read_to_string(s.report.join("degradation.md")).unwrap();
        assert!(md.starts_with("# "));
        assert!(md.contains("## Training error (%) per epoch"));
        assert!(md.contains("## Test error (%) per epoch"));
        // Columns: epoch and the six nets.
        assert!(md.contains(
            "| epoch | plain-20 | plain-56 | resnet-20 | resnet-56 | plain-56 + identity prior λ=1e-4 | plain-56 + identity prior λ=1e-3 |"
        ));
        assert!(
            md.contains("| 3 | 10.00 | 20.00 | 9.00 | 6.00 | 18.00 | 15.00 |"),
            "{md}"
        );
        assert!(md.contains("| 3 | 12.00 | 22.00 | 11.00 | 8.00 | 20.00 | 17.00 |"));
        // Summary: final, best test, median images/s, seconds.
        assert!(
            md.contains("| plain-20 | 10.00 | 12.00 | 12.00 (epoch 3) | 102.0 | 38 |"),
            "{md}"
        );
        assert!(md.contains("**10.00 points**"));
        assert!(md.contains("| plain-56 + identity prior λ=1e-3 | 15.00 | 0.50 (50%) |"));
        assert!(md.contains("| plain-56 + identity prior λ=1e-4 | 18.00 | 0.20 (20%) |"));
        assert!(md.contains("| resnet-56 (reference) | 6.00 | 1.40 (140%) |"));
        assert!(md.contains("**Yes**: final training error 20.00% against 10.00%"));
        assert!(md.contains("Did ResNet-56 beat ResNet-20? On training error **yes**"));
        assert!(md.contains("λ=1e-3 closed 50% of it"));
        assert!(md.contains("ResNet-56, the reference, closed 140%"));
        assert!(md.contains("batch | 128"));
        assert!(md.contains("3 (7 steps each, 21 in all)"), "{md}");
        assert!(md.contains("| resnet-20 | 9.00 | 11.00 | 11.00 (epoch 3) | 102.0 | 30 |"));
        assert!(md.contains("--prior identity --prior-lambda 1e-4"));
        assert!(md.contains(NOTES_OPEN) && md.contains(NOTES_CLOSE));
        assert!(!md.contains("Incomplete"));
        assert!(!md.contains("PyTorch"));
        let svg = fs::read_to_string(s.report.join("degradation.svg")).unwrap();
        assert!(svg.starts_with("<svg"));
        let _ = fs::remove_dir_all(&out);
    }

    #[test]
    fn report_says_no_gap_plainly() {
        let out = temp_dir("nogap");
        let s = study(&out, &["1e-3"], 2);
        fake_metrics(&out, "plain-20", 2, 0.40, 0.20);
        fake_metrics(&out, "plain-56", 2, 0.40, 0.18);
        fake_metrics(&out, "resnet-20", 2, 0.40, 0.20);
        fake_metrics(&out, "resnet-56", 2, 0.40, 0.22);
        fake_metrics(&out, "plain56-identity-1e-3", 1, 0.40, 0.40); // incomplete
        let c = Curves::load(&s).unwrap();
        let md = render_report(&s, &c, None);
        assert!(md.contains("**n/a: no gap.**"), "{md}");
        assert!(md.contains("| resnet-56 (reference) | 22.00 | n/a: no gap |"));
        assert!(md.contains("| plain-56 + identity prior λ=1e-3 | – | n/a: incomplete |"));
        assert!(md.contains("Did plain-56 train worse than plain-20? **No**"));
        assert!(md.contains("On training error **no**"));
        assert!(md.contains("**Incomplete:** plain-56 + identity prior λ=1e-3 (1 of 2 epochs)"));
        assert!(md.contains("wall time of the study | not recorded"));
        let _ = fs::remove_dir_all(&out);
    }

    #[test]
    fn notes_survive_regeneration() {
        let (out, s) = degraded_study("notes");
        write_report(&s).unwrap();
        let path = s.report.join("degradation.md");
        let md = fs::read_to_string(&path).unwrap();
        assert!(md.contains(NOTES_PLACEHOLDER));
        let mine = "\nThe gap looks real; rerun with seeds 1-4.\n\n| a | b |\n";
        let edited = md.replace(
            &format!("{NOTES_OPEN}\n{NOTES_PLACEHOLDER}\n"),
            &format!("{NOTES_OPEN}{mine}"),
        );
        fs::write(&path, edited).unwrap();
        // New numbers, same notes.
        fake_metrics(&out, "plain-56", 3, 0.50, 0.25);
        write_report(&s).unwrap();
        let md = fs::read_to_string(&path).unwrap();
        assert!(
            md.contains(&format!("{NOTES_OPEN}{mine}{NOTES_CLOSE}")),
            "{md}"
        );
        assert!(!md.contains(NOTES_PLACEHOLDER));
        assert!(md.contains("25.00% − 10.00%"));
        assert_eq!(md.matches(NOTES_OPEN).count(), 1);
        // A lost closing marker keeps everything after the opening one.
        let merged = merge_notes(Some("x\n<!-- notes -->\nkeep me\n"), &md);
        assert!(merged.contains(&format!("{NOTES_OPEN}\nkeep me\n{NOTES_CLOSE}")));
        // No old file or no markers: the new text as it is.
        assert_eq!(merge_notes(None, &md), md);
        assert_eq!(merge_notes(Some("no markers"), &md), md);
        let _ = fs::remove_dir_all(&out);
    }

    #[test]
    fn svg_is_well_formed() {
        let (out, s) = degraded_study("svg");
        let mut c = Curves::load(&s).unwrap();
        let svg = render_svg(&s, &c);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        // One polyline per net and panel.
        assert_eq!(svg.matches("<polyline").count(), 2 * 6);
        for n in s.nets() {
            assert!(svg.contains(&format!("<title>{}</title>", esc(&n.name))));
        }
        assert!(!svg.contains("stroke-dasharray"));
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        // Each net's training error falls, so its y pixels must grow (log axis, downward y).
        let first = svg.split("<polyline").nth(1).unwrap();
        let pts = first
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let ys: Vec<f64> = pts
            .split(' ')
            .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(ys.len(), 3);
        assert!(ys.windows(2).all(|w| w[0] < w[1]), "{ys:?}");
        // PyTorch's curves come dashed.
        c.torch
            .insert("plain-56".into(), c.rows("plain-56").to_vec());
        let svg = render_svg(&s, &c);
        assert_eq!(svg.matches("<polyline").count(), 2 * 7);
        assert!(svg.contains("plain-56 (PyTorch)"));
        assert!(svg.contains("stroke-dasharray"));
        let _ = fs::remove_dir_all(&out);
    }

    #[test]
    fn log_axis_is_monotone_and_logarithmic() {
        let a = LogAxis::fit([3.0, 40.0]);
        assert_eq!(a, LogAxis { lo: 2.0, hi: 50.0 });
        assert_eq!(a.ticks(), vec![2.0, 5.0, 10.0, 20.0, 50.0]);
        let y = |v| a.y(v, 0.0, 300.0);
        let vals = [2.0, 2.5, 3.0, 5.0, 7.0, 10.0, 20.0, 33.0, 50.0];
        assert!(vals.windows(2).all(|w| y(w[0]) > y(w[1])));
        assert!((y(2.0) - 300.0).abs() < 1e-9 && y(50.0).abs() < 1e-9);
        // Equal ratios, equal distances.
        assert!(((y(2.0) - y(20.0)) - (y(5.0) - y(50.0))).abs() < 1e-9);
        let b = LogAxis::fit([1.0, 100.0]);
        assert_eq!(b.ticks(), vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]);
        assert_eq!(LogAxis::fit([10.0]), LogAxis { lo: 10.0, hi: 20.0 });
        assert_eq!(
            LogAxis::fit([100.0]),
            LogAxis {
                lo: 50.0,
                hi: 100.0
            }
        );
        assert_eq!(LogAxis::fit([0.0_f64.max(0.1), 0.3]).lo, 0.1);
        assert_eq!(
            LogAxis::fit(std::iter::empty()),
            LogAxis { lo: 1.0, hi: 100.0 }
        );
    }

    /// A checkpoint file in `dir` whose metadata records `recipe` (a JSON object's text).
    fn fake_checkpoint(dir: &Path, step: u32, recipe: &str) {
        let header = format!(
            "{{\"fc.weight\": {{\"dtype\": \"F32\", \"shape\": [1, 2], \"data_offsets\": [0, 8]}}, \"__metadata__\": {{\"format\": \"resnet-rs-checkpoint\", \"recipe\": {}, \"progress\": \"{{}}\"}}}}",
            json_str(recipe)
        );
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0; 8]);
        fs::write(
            dir.join(format!("checkpoint-step{step}.safetensors")),
            bytes,
        )
        .unwrap();
    }

    #[test]
    fn checks_the_recipe_checkpoints_record() {
        let meta = safetensors_metadata(
            r#"{"a": {"shape": [1, [2, {}]], "x": null}, "__metadata__": {"k": "v"}, "b": []}"#,
        )
        .unwrap();
        assert_eq!(meta, vec![("k".into(), Json::Str("v".into()))]);
        assert!(safetensors_metadata(r#"{"a": [1, 2}"#).is_err());
        let f = parse_scalar_fields(r#"{"m": [0.5, [1]], "k": 1, "o": {"x": "}"}, "z": null}"#)
            .unwrap();
        assert_eq!(
            f,
            vec![("k".into(), Json::Num(1.0)), ("z".into(), Json::Null)]
        );
        assert!(parse_object(r#"{"m": [0.5]}"#).is_err());
        let (out, s) = degraded_study("recipe");
        let good = r#"{"model": "cifar-plain20", "shortcut": "none", "classes": 10, "lr": 0.1, "momentum": 0.9, "dampening": 0.0, "nesterov": false, "weight_decay": 0.0001, "prior": "zero", "prior_lambda": 0.0, "decay": "all", "seed": 0, "init": null, "data": "fashion-mnist:/d", "batch": 128, "schedule": "he", "subset": 1000, "augment": true, "normalize_mean": [0.286], "normalize_std": [0.353]}"#;
        fake_checkpoint(&out.join("plain-20"), 16, &good.replace("0.0001", "0.0005"));
        fake_checkpoint(&out.join("plain-20"), 32, good); // the latest
        let net = &s.nets()[0];
        let r = checkpoint_recipe(&out.join("plain-20")).unwrap().unwrap();
        assert!(recipe_mismatches(&s, net, &r).is_empty());
        assert_eq!(checkpoint_recipe(&out.join("plain-56")).unwrap(), None);
        let prior = &s.nets()[5]; // λ=1e-3
        let r = parse_scalar_fields(&good.replace("cifar-plain20", "cifar-plain56").replace(
            "\"zero\", \"prior_lambda\": 0.0",
            "\"identity\", \"prior_lambda\": 0.001",
        ))
        .unwrap();
        assert!(recipe_mismatches(&s, prior, &r).is_empty());
        // Where the prior's run started, as the recipe records it since `prior_init` existed.
        let started = |init: &str, noise: &str| {
            parse_scalar_fields(&good.replace("cifar-plain20", "cifar-plain56").replace(
                "\"zero\", \"prior_lambda\": 0.0",
                &format!(
                    "\"identity\", \"prior_lambda\": 0.001, \"prior_init\": \"{init}\", \"prior_noise\": {noise}"
                ),
            ))
            .unwrap()
        };
        assert!(recipe_mismatches(&s, prior, &started("centre", "0.0")).is_empty());
        assert_eq!(
            recipe_mismatches(&s, prior, &started("random", "null")),
            vec!["prior_init random (expected centre)"]
        );
        assert_eq!(
            recipe_mismatches(&s, prior, &started("centre", "0.01")),
            vec!["prior_noise 0.01 (expected 0)"]
        );
        let mut noisy = prior.clone();
        noisy.noise = Some("0.01".into());
        assert!(recipe_mismatches(&s, &noisy, &started("centre", "0.01")).is_empty());
        let mut random = prior.clone();
        random.random_start = true;
        assert!(recipe_mismatches(&s, &random, &started("random", "null")).is_empty());
        assert_eq!(
            recipe_mismatches(&s, &random, &started("centre", "0.0")),
            vec!["prior_init centre (expected random)"]
        );
        let wrong = parse_scalar_fields(
            &good
                .replace("0.0001", "0.0005")
                .replace("128", "64")
                .replace("\"he\"", "\"constant\"")
                .replace("true, \"normalize", "false, \"normalize"),
        )
        .unwrap();
        let m = recipe_mismatches(&s, prior, &wrong);
        assert_eq!(
            m,
            vec![
                "weight_decay 0.0005 (expected 0.0001)",
                "batch 64 (expected 128)",
                "prior_lambda 0 (expected 0.001)",
                "model cifar-plain20 (expected cifar-plain56)",
                "prior zero (expected identity)",
                "schedule constant (expected he)",
                "augment false (expected true)",
            ]
        );
        // The report says so.
        fake_checkpoint(
            &out.join("resnet-20"),
            48,
            &good.replace("0.0001", "0.0005"),
        );
        fs::write(out.join("resnet-56/checkpoint-step1.safetensors"), b"xx").unwrap();
        let md = render_report(&s, &Curves::load(&s).unwrap(), None);
        assert!(
            md.contains("**some runs did not train with the recipe above**"),
            "{md}"
        );
        assert!(md.contains("- **resnet-20: weight_decay 0.0005 (expected 0.0001), model cifar-plain20 (expected cifar-resnet20)**"), "{md}");
        assert!(md.contains("- plain-56: not checked, no checkpoint"));
        assert!(md.contains("- resnet-56: not checked,"));
        assert!(!md.contains("- plain-20"));
        assert!(md.contains("**Some runs' checkpoints record another recipe"));
        let _ = fs::remove_dir_all(&out);
    }

    /// PyTorch curves with a stand-in script: one at a time, stdout saved as the curve.
    #[cfg(unix)]
    #[test]
    fn runs_torch_curves_one_at_a_time() {
        use std::os::unix::fs::PermissionsExt;
        let out = temp_dir("torch");
        let fake = out.join("fake-torch");
        let lock = out.join("lock");
        fs::write(
            &fake,
            format!(
                r#"#!/bin/sh
mkdir "{0}" || {{ echo "two at once" >&2; exit 9; }}
sleep 0.3
arch="$3"
printf '{{"arch": "%s", "prior": "zero", "epoch": 1, "train_loss": 1.0, "train_error": 0.5, "test_error": 0.45, "seconds": 1.0}}\n' "$arch"
printf '{{"arch": "%s", "prior": "zero", "epoch": 2, "train_loss": 0.5, "train_error": 0.25, "test_error": 0.3, "seconds": 1.0}}\n' "$arch"
rmdir "{0}"
"#,
                lock.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        let mut s = study(&out.join("study"), &["1e-3"], 2);
        s.jobs = 3;
        s.torch = Some(fake);
        for n in s.nets() {
            fake_metrics(&s.out, &n.dir, 2, 0.4, 0.2);
        }
        run_study(&s, Path::new("/nonexistent/resnet")).unwrap();
        for t in torch_curves(&s.lambdas) {
            let rows = read_curve(&s.out.join(t.file())).unwrap().unwrap();
            assert!(complete(&rows, 2), "{}", t.file());
        }
        let md = fs::read_to_string(s.report.join("degradation.md")).unwrap();
        assert!(md.contains("## Beside PyTorch"));
        assert!(md.contains("### resnet-20"));
        assert!(
            md.contains("| 2 | 20.00 | 25.00 | 22.00 | 30.00 | 0.5000 | 0.5000 |"),
            "{md}"
        );
        assert!(
            md.contains("### plain-56 + identity prior λ=1e-3\n"),
            "{md}"
        );
        let svg = fs::read_to_string(s.report.join("degradation.svg")).unwrap();
        assert_eq!(svg.matches("stroke-dasharray").count(), 2 * 4 + 4);
        assert!(svg.contains("plain-56 + identity prior λ=1e-3 (PyTorch)"));
        let _ = fs::remove_dir_all(&out);
    }

    /// The whole study with a stand-in for `resnet`: runs, skips, resumes and failures.
    #[cfg(unix)]
    #[test]
    fn runs_with_a_fake_binary() {
        use std::os::unix::fs::PermissionsExt;
        let out = temp_dir("run");
        let fake = out.join("fake-resnet");
        // Writes two epochs of metrics into --out/--resume DIR; fails for the prior runs when
        // FAIL_PRIOR is set in its directory.
        fs::write(
            &fake,
            r#"#!/bin/sh
dir=""; prior=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out|--resume) dir="$2"; echo "$1" > "$2/mode"; shift 2;;
    --prior) prior="$2"; shift 2;;
    *) shift;;
  esac
done
if [ -n "$prior" ] && [ -e "$dir/../FAIL_PRIOR" ]; then
  echo "step 7: the loss is NaN; stopping" >&2; exit 3
fi
printf '{"epoch": 1, "step": 16, "train_loss": 1.0, "train_error": 0.5, "test_loss": 1.0, "test_error": 0.5, "lr": 0.1, "seconds": 1.0, "images_per_s": 50.0}\n' >> "$dir/metrics.jsonl"
printf '{"epoch": 2, "step": 32, "train_loss": 0.5, "train_error": 0.3, "test_loss": 0.6, "test_error": 0.35, "lr": 0.01, "seconds": 1.0, "images_per_s": 60.0}\n' >> "$dir/metrics.jsonl"
echo "done"
"#,
        )
        .unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        let mut s = study(&out.join("study"), &["1e-3"], 2);
        s.argv = vec!["--quick".into()];
        fs::create_dir_all(&s.out).unwrap();
        fs::write(s.out.join("FAIL_PRIOR"), b"").unwrap();
        let e = run_study(&s, &fake).unwrap_err();
        assert!(e.contains("plain-56 + identity prior λ=1e-3 failed"), "{e}");
        assert!(e.contains("exit status: 3"), "{e}");
        let log = fs::read_to_string(s.out.join("plain56-identity-1e-3/stderr.log")).unwrap();
        assert!(log.contains("loss is NaN"));
        // The others ran to the end anyway.
        for d in ["plain-20", "plain-56", "resnet-20", "resnet-56"] {
            let rows = read_curve(&s.out.join(d).join(METRICS)).unwrap().unwrap();
            assert!(complete(&rows, 2), "{d}");
            assert_eq!(
                fs::read_to_string(s.out.join(d).join("mode"))
                    .unwrap()
                    .trim(),
                "--out"
            );
        }
        let r = Record::read(&s.out).unwrap().unwrap();
        assert_eq!((r.invocations, r.epochs, r.subset), (1, 2, 1000));
        assert_eq!(r.command, "cargo xtask degradation --quick");
        // Continue: only the failed run is redone, from its checkpoint when it has one.
        fs::remove_file(s.out.join("FAIL_PRIOR")).unwrap();
        fs::write(
            s.out
                .join("plain56-identity-1e-3/checkpoint-step16.safetensors"),
            b"",
        )
        .unwrap();
        fs::write(s.out.join("plain-20/mode"), "untouched").unwrap();
        run_study(&s, &fake).unwrap();
        assert_eq!(
            fs::read_to_string(s.out.join("plain56-identity-1e-3/mode"))
                .unwrap()
                .trim(),
            "--resume"
        );
        assert_eq!(
            fs::read_to_string(s.out.join("plain-20/mode")).unwrap(),
            "untouched"
        );
        let md = fs::read_to_string(s.report.join("degradation.md")).unwrap();
        assert!(md.contains("Command: `cargo xtask degradation --quick`"));
        assert!(md.contains("2 invocations that trained"));
        assert!(md.contains("**n/a: no gap.**"));
        // Other settings in the same directory are refused.
        let mut other = s.clone();
        other.seed = 1;
        assert!(
            run_study(&other, &fake)
                .unwrap_err()
                .contains("other settings")
        );
        let _ = fs::remove_dir_all(&out);
    }
}
