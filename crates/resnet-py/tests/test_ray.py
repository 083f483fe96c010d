"""The Ray Data example on a local Ray instance: its Parquet output equals `resnet classify`."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_cli_probabilities, cli_classify, golden, load_safetensors

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ray_classify.py"


def test_ray_example_equals_cli(r18_path, images, tmp_path):
    try:
        import pyarrow.parquet as pq
        import ray  # noqa: F401
    except ImportError:
        print("\n*** SKIPPING: ray[data] is not installed ***", file=sys.stderr)
        pytest.skip("ray[data] is not installed")
    out = tmp_path / "preds"
    run = subprocess.run(
        [
            sys.executable, str(EXAMPLE), str(images[0].parent), "--weights", str(r18_path),
            "--out", str(out), "--actors", "2", "--threads", "1", "--batch", "2", "--top", "5",
            "--embed", "--num-cpus", "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = pq.read_table(out).to_pylist()
    by_name = {Path(r["path"]).name: r for r in table}
    cli = cli_classify(r18_path, images, k=5)
    assert sorted(by_name) == sorted(Path(c["path"]).name for c in cli)
    for c in cli:
        r = by_name[Path(c["path"]).name]
        assert r["indices"] == c["indices"]
        assert r["names"] == c["names"]
        assert_cli_probabilities(r["probabilities"], c["probabilities"])
        assert len(r["embedding"]) == 512
    # The embeddings are the model's features of torchvision's tensors.
    exp = load_safetensors(golden("preprocess.safetensors"))
    import resnet_rs

    m = resnet_rs.ResNet.from_file(r18_path, threads=1)
    for name, key in [("chelsea.png", "chelsea"), ("coffee.png", "coffee"), ("rocket.jpg", "rocket")]:
        want = m.features(exp[key])[0]
        np.testing.assert_allclose(np.float32(by_name[name]["embedding"]), want, rtol=0, atol=1e-5)
