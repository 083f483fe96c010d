"""Bad input raises a Python exception with the Rust message; nothing crashes."""

import numpy as np
import pytest

import resnet_rs
from conftest import golden


@pytest.fixture(scope="module")
def m():
    return resnet_rs.ResNet.from_file(golden("resnet18_f16.safetensors"), threads=1)


def x(*shape):
    return np.zeros(shape, dtype=np.float32)


def test_wrong_dtype(m):
    with pytest.raises(TypeError, match="float32"):
        m.forward(np.zeros((1, 3, 8, 8)))  # float64
    with pytest.raises(TypeError, match="float32"):
        m.forward(np.zeros((1, 3, 8, 8), dtype=np.float16))
    with pytest.raises(TypeError, match="float32"):
        m.forward(np.zeros((1, 3, 8, 8), dtype=">f4"))  # big-endian


def test_not_an_array(m):
    with pytest.raises(TypeError, match="numpy.ndarray"):
        m.forward([[[[0.0]]]])
    with pytest.raises(TypeError):
        m.features(None)


def test_non_contiguous(m):
    with pytest.raises(ValueError, match="ascontiguousarray"):
        m.forward(x(1, 3, 16, 16)[:, :, ::2, :])
    with pytest.raises(ValueError, match="ascontiguousarray"):
        m.forward(np.asfortranarray(x(2, 3, 8, 8)))
    with pytest.raises(ValueError, match="ascontiguousarray"):
        m.features(x(8, 8, 3, 2).transpose(3, 2, 0, 1))


def test_unaligned(m):
    buf = np.zeros(3 * 8 * 8 * 4 + 1, dtype=np.uint8)
    a = np.frombuffer(buf.data, dtype=np.float32, offset=1, count=3 * 8 * 8).reshape(1, 3, 8, 8)
    if a.flags.aligned:
        pytest.skip("this NumPy aligned the buffer")
    with pytest.raises(ValueError):
        m.forward(a)


def test_wrong_rank_and_shape(m):
    for bad in [x(3, 8, 8), x(8), x(1, 1, 3, 8, 8), np.float32(1.0)]:
        with pytest.raises((ValueError, TypeError)):
            m.forward(bad)
    with pytest.raises(ValueError, match="channels"):
        m.forward(x(1, 4, 8, 8))
    with pytest.raises(ValueError):
        m.forward(x(1, 3, 0, 8))
    # An empty batch: an error or an empty result, never a crash.
    try:
        assert m.forward(x(0, 3, 8, 8)).shape[0] == 0
    except ValueError:
        pass


def test_nan_and_inf(m):
    a = x(1, 3, 8, 8)
    a[0, 1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        m.forward(a)
    a[0, 1, 2, 3] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        m.features(a)
    with pytest.raises(ValueError, match="non-finite"):
        m.classify([a[0]])


def test_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        resnet_rs.ResNet.from_file(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(resnet_rs.WeightsError, match="junk.safetensors"):
        resnet_rs.ResNet.from_file(junk)
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"abc")
    with pytest.raises(resnet_rs.WeightsError, match="shorter"):
        resnet_rs.ResNet.from_file(short)
    # An EDSR file is not a classification network, and the other way round.
    with pytest.raises(resnet_rs.WeightsError):
        resnet_rs.ResNet.from_file(golden("edsr_tiny_x3.safetensors"))
    with pytest.raises(resnet_rs.WeightsError):
        resnet_rs.Edsr.from_file(golden("resnet18_f16.safetensors"))
    with pytest.raises(ValueError, match="threads"):
        resnet_rs.ResNet.from_file(golden("resnet18_f16.safetensors"), threads=0)
    assert issubclass(resnet_rs.WeightsError, Exception)


def test_classify_bad_items(m, tmp_path):
    with pytest.raises(FileNotFoundError):
        m.classify([str(tmp_path / "missing.png")])
    notimg = tmp_path / "a.png"
    notimg.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="decode"):
        m.classify([notimg])
    with pytest.raises(TypeError, match="paths"):
        m.classify([42])
    with pytest.raises(ValueError, match="one image per array"):
        m.classify([x(2, 3, 8, 8)])
    with pytest.raises(TypeError):
        m.classify([np.zeros((3, 8, 8))])
    assert m.classify([], k=5) == []


def test_preprocess_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        resnet_rs.preprocess(tmp_path / "missing.jpg")
    with pytest.raises(ValueError):
        resnet_rs.preprocess(golden("../data/images/chelsea.png"), crop=0)
    with pytest.raises(ValueError):
        resnet_rs.preprocess(golden("../data/images/chelsea.png"), std=(0.0, 1.0, 1.0))


def test_edsr_errors():
    e = resnet_rs.Edsr.from_file(golden("edsr_tiny_x3.safetensors"), threads=1)
    with pytest.raises(ValueError):
        e.enhance(x(1, 4, 8, 8))
    with pytest.raises(ValueError):
        e.enhance(x(1, 3, 8, 8), tile=0)
    a = x(1, 3, 8, 8)
    a[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        e.enhance(a)
    with pytest.raises(FileNotFoundError):
        resnet_rs.Edsr.from_file("/nonexistent/edsr.safetensors")
