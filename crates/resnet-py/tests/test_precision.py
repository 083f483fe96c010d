"""`precision="bf16"`: the golden ResNet-18's top-1 as f32's and its logits within the documented
bound; a clear error for an unknown precision, and (on a CPU without AVX512-BF16) for bf16."""

import numpy as np
import pytest

import resnet_rs
from conftest import golden


def bf16_available():
    try:
        resnet_rs.ResNet.from_file(golden("resnet18_f16.safetensors"), precision="bf16")
        return True
    except RuntimeError as e:
        assert "AVX512-BF16" in str(e)
        print("\n!!!!!!!! SKIPPED: no AVX512-BF16 on this CPU: bf16 only checked to fail !!!!!!!!")
        return False


def test_unknown_precision_is_a_value_error():
    with pytest.raises(ValueError, match="bf16"):
        resnet_rs.ResNet.from_file(golden("resnet18_f16.safetensors"), precision="f16")


def test_bf16_logits_near_f32_and_same_top1():
    if not bf16_available():
        return
    path = golden("resnet18_f16.safetensors")
    a = resnet_rs.ResNet.from_file(path, threads=1)
    b = resnet_rs.ResNet.from_file(path, threads=1, precision="bf16")
    assert (a.precision, b.precision) == ("f32", "bf16")
    assert "precision='bf16'" in repr(b) or 'precision="bf16"' in repr(b)
    x = np.random.default_rng(4).standard_normal((3, 3, 96, 96), dtype=np.float32)
    la, lb = a.forward(x), b.forward(x)
    rel = np.abs(la - lb).max() / np.abs(la).max()
    assert 1e-5 < rel < 1e-2, rel
    np.testing.assert_array_equal(la.argmax(axis=1), lb.argmax(axis=1))
