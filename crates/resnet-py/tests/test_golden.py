"""Outputs against the PyTorch golden fixtures and against the `resnet` CLI."""

import subprocess
import sys

import numpy as np
import pytest

import resnet_rs
from conftest import assert_cli_probabilities, cli_classify, golden, load_safetensors, rel_err


def test_resnet18_logits_and_features(r18, r18_expected):
    x = r18_expected["x224"]
    assert x.dtype == np.float32 and x.flags.c_contiguous
    logits = r18.forward(x)
    assert logits.shape == (2, 1000) and logits.dtype == np.float32
    assert rel_err(logits, r18_expected["x224.logits"]) < 1e-4
    feats = r18.features(x)
    assert feats.shape == (2, 512) and feats.dtype == np.float32
    assert rel_err(feats, r18_expected["x224.pool"]) < 1e-4


def test_resnet50_logits_and_features():
    m = resnet_rs.ResNet.from_file(golden("resnet50_bf16.safetensors"), threads=2)
    exp = load_safetensors(golden("resnet50_bf16.expected.safetensors"))
    assert m.arch == "resnet50" and m.feature_dim == 2048
    assert rel_err(m.forward(exp["x224"]), exp["x224.logits"]) < 1e-4
    assert rel_err(m.features(exp["x224"]), exp["x224.pool"]) < 1e-4


def test_any_batch_and_size(r18, r18_expected):
    x = r18_expected["x224"]
    # A contiguous slice of a batch is read in place and gives that row.
    one = r18.forward(x[1:2])
    assert one.shape == (1, 1000)
    assert rel_err(one[0], r18_expected["x224.logits"][1]) < 1e-4
    odd = np.random.default_rng(0).standard_normal((3, 3, 37, 53), dtype=np.float32)
    assert r18.forward(odd).shape == (3, 1000)
    assert r18.features(odd[:, :, :1, :1].copy()).shape == (3, 512)


def test_readonly_input(r18, r18_expected):
    x = r18_expected["x224"].copy()
    x.setflags(write=False)
    assert rel_err(r18.forward(x), r18_expected["x224.logits"]) < 1e-4


def test_preprocess_is_torchvisions():
    exp = load_safetensors(golden("preprocess.safetensors"))
    images = golden("../data/images")
    for name, file in [("chelsea", "chelsea.png"), ("coffee", "coffee.png"), ("rocket", "rocket.jpg")]:
        x = resnet_rs.preprocess(images / file)
        assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
        assert np.max(np.abs(x - exp[name])) < 1e-6, name


def test_model_preprocess_is_torchvisions(r18, images):
    for p in images:
        np.testing.assert_array_equal(r18.preprocess(p), resnet_rs.preprocess(p))


def test_classify_equals_cli(r18, r18_path, images):
    ours = r18.classify([str(p) for p in images], k=5)
    cli = cli_classify(r18_path, images, k=5)
    assert len(ours) == len(cli) == len(images)
    for row, c, p in zip(ours, cli, images):
        assert c["path"] == str(p)
        assert [r[0] for r in row] == c["indices"]
        assert [r[1] for r in row] == c["names"]
        # The CLI prints the f32 probabilities to 6 significant digits.
        assert_cli_probabilities([r[2] for r in row], c["probabilities"])


def test_classify_directory_order_and_arrays(r18, images):
    by_path = r18.classify(images, k=3)  # os.PathLike items
    single = r18.classify(str(images[0]), k=3)  # a lone path is a list of one
    assert single == by_path[:1]
    arrays = [resnet_rs.preprocess(p)[0] for p in images]  # [3, 224, 224] arrays
    by_array = r18.classify(arrays, k=3)
    assert [[r[0] for r in row] for row in by_array] == [[r[0] for r in row] for row in by_path]
    for a, b in zip(by_array, by_path):
        np.testing.assert_allclose([r[2] for r in a], [r[2] for r in b], rtol=1e-5)
    assert all(len(row) == 3 for row in by_path)


def test_issue_command_prints_cli_top5(r18_path, images):
    chelsea = [p for p in images if p.name == "chelsea.png"][0]
    code = (
        "import resnet_rs; m = resnet_rs.ResNet.from_file(%r); print(m.classify([%r]))"
        % (str(r18_path), str(chelsea))
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    cli = cli_classify(r18_path, [chelsea], k=5)[0]
    expected = [(i, n, float(np.float32(p))) for i, n, p in zip(cli["indices"], cli["names"], cli["probabilities"])]
    got = eval(out)[0]  # the printed list of tuples
    assert [(i, n) for i, n, _ in got] == [(i, n) for i, n, _ in expected]
    assert_cli_probabilities([p for *_, p in got], cli["probabilities"])


@pytest.mark.parametrize("name", ["edsr_tiny_x3", "edsr_tiny_x4"])
def test_edsr_enhance(name):
    m = resnet_rs.Edsr.from_file(golden(f"{name}.safetensors"), threads=2)
    exp = load_safetensors(golden(f"{name}.expected.safetensors"))
    x = exp["input"]
    whole = m.enhance(x, tile=None)
    assert whole.shape == exp["output"].shape
    assert np.max(np.abs(whole - exp["output"])) < 1e-3
    tiled = m.enhance(x, tile=16)
    # Up to rounding (Winograd F(4x4) at tile borders): 2e-5 of the largest value.
    assert np.max(np.abs(tiled - whole)) <= 2e-5 * np.max(np.abs(whole))


def test_edsr_on_an_image():
    m = resnet_rs.Edsr.from_file(golden("edsr_tiny_x3.safetensors"), threads=1)
    x = resnet_rs.load_rgb(golden("../data/images/rocket.jpg"))[:, :, :40, :30].copy()
    assert x.min() >= 0 and x.max() <= 255
    y = m.enhance(x, tile=24)
    assert y.shape == (1, 3, 120, 90)


def test_bytes_equal_paths(r18, images):
    blobs = [p.read_bytes() for p in images]
    assert r18.classify(blobs) == r18.classify(images)
    for p, b in zip(images, blobs):
        np.testing.assert_array_equal(resnet_rs.preprocess(b), resnet_rs.preprocess(p))
        np.testing.assert_array_equal(r18.preprocess(b), r18.preprocess(p))
