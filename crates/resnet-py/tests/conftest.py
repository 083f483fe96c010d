"""Shared fixtures: the golden files, a safetensors reader (NumPy only), the `resnet` CLI."""

import json
import math
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import resnet_rs

REPO = Path(__file__).resolve().parents[3]


def _golden_dir():
    env = os.environ.get("RESNET_GOLDEN_DIR")
    return Path(env) if env else REPO.parent / "shared" / "golden"


GOLDEN = _golden_dir()
IMAGES = GOLDEN.parent / "data" / "images"


def golden(name):
    """Path of a golden fixture; skip loudly when the directory is absent (fail when
    RESNET_GOLDEN_DIR is set: CI sets it, so there a missing file is an error)."""
    p = GOLDEN / name
    if not p.exists():
        msg = f"golden fixture {p} is missing"
        if os.environ.get("RESNET_GOLDEN_DIR"):
            pytest.fail(msg)
        print(f"\n*** SKIPPING: {msg} (set RESNET_GOLDEN_DIR) ***", file=sys.stderr)
        pytest.skip(msg)
    return p


_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64}


def load_safetensors(path):
    """The tensors of a safetensors file as NumPy arrays (F32/F64/F16/I64; BF16 widened)."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        if info["dtype"] == "BF16":
            u = np.frombuffer(body[a:b], dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(body[a:b], dtype=np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<"))
        out[name] = arr.reshape(info["shape"]).copy()
    return out


def rel_err(ours, expected):
    return float(np.max(np.abs(ours - expected)) / np.max(np.abs(expected)))


def cli_round(p):
    """A float32 probability as `resnet classify --json` prints it: 6 significant digits,
    rounded half away from zero in f64 (the CLI's `round_sig`)."""
    p = float(np.float32(p))
    if p == 0.0 or not math.isfinite(p):
        return p
    scale = 10.0 ** (5 - math.floor(math.log10(abs(p))))
    v = p * scale
    return math.copysign(math.floor(abs(v) + 0.5), v) / scale


def assert_cli_probabilities(ours, cli):
    """Our float32 probabilities, rounded as the CLI rounds them, are the CLI's (to the last
    bit of the f64 division, whatever the two languages' powers of ten do)."""
    np.testing.assert_allclose([cli_round(p) for p in ours], cli, rtol=1e-12, atol=0)


def cli_binary():
    """The `resnet` binary: $RESNET_CLI, else the newest built one in the target directory.
    None when there is none (the CLI comparisons then skip, loudly)."""
    env = os.environ.get("RESNET_CLI")
    if env:
        return env
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    found = [target / p / "resnet" for p in ("release", "debug")]
    found = [p for p in found if p.exists()]
    if found:
        return str(max(found, key=lambda p: p.stat().st_mtime))
    return shutil.which("resnet")


def cli_classify(weights, inputs, k=5):
    """`resnet classify --json` on `inputs`: one dict per image."""
    exe = cli_binary()
    if exe is None:
        print("\n*** SKIPPING: no `resnet` binary (set RESNET_CLI or build resnet-cli) ***", file=sys.stderr)
        pytest.skip("no resnet binary")
    out = subprocess.run(
        [exe, "classify", *map(str, inputs), "--weights", str(weights), "--top", str(k), "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def r18_path():
    return golden("resnet18_f16.safetensors")


@pytest.fixture(scope="session")
def r18(r18_path):
    return resnet_rs.ResNet.from_file(r18_path, threads=2)


@pytest.fixture(scope="session")
def r18_expected():
    return load_safetensors(golden("resnet18_f16.expected.safetensors"))


@pytest.fixture(scope="session")
def images():
    if not IMAGES.is_dir():
        golden("../data/images/chelsea.png")
    return sorted(p for p in IMAGES.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
