"""One model shared by Python threads: the GIL is released, results are bitwise sequential's."""

import threading

import numpy as np

import resnet_rs
from conftest import golden


def test_four_threads_one_model_bitwise_equal_to_sequential():
    m = resnet_rs.ResNet.from_file(golden("resnet18_f16.safetensors"), threads=1)
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((2, 3, 64 + 8 * i, 64), dtype=np.float32) for i in range(4)]
    sequential = [(m.forward(x), m.features(x)) for x in inputs]
    results = [None] * 4
    errors = []
    start = threading.Barrier(4)

    def work(i):
        try:
            start.wait()
            out = []
            for _ in range(3):
                out.append((m.forward(inputs[i]), m.features(inputs[i])))
            results[i] = out
        except Exception as e:  # reported below, with the thread
            errors.append((i, e))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(4):
        for logits, feats in results[i]:
            np.testing.assert_array_equal(logits, sequential[i][0])
            np.testing.assert_array_equal(feats, sequential[i][1])


def test_classify_from_threads(images):
    m = resnet_rs.ResNet.from_file(golden("resnet18_f16.safetensors"), threads=1)
    expected = m.classify(images)
    results = [None] * 4

    def work(i):
        results[i] = m.classify(images)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results)
