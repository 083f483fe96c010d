"""Time an ONNX ResNet on OpenVINO's CPU plugin: one JSON line (see openvino-baseline).

The model is reshaped to a static [batch, 3, size, size] input and compiled with
INFERENCE_PRECISION_HINT (bf16 by default: OpenVINO's own choice on CPUs with AVX512-BF16 or
AMX), PERFORMANCE_HINT LATENCY and INFERENCE_NUM_THREADS; one untimed warm-up inference,
then the median and the fastest of `iters` timed ones on a fixed N(0, 1) input.
"""

import argparse
import json
import statistics
import time

import numpy as np
import openvino as ov


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("onnx")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--precision", default="bf16", choices=["bf16", "f32"])
    a = ap.parse_args()
    core = ov.Core()
    model = core.read_model(a.onnx)
    model.reshape([a.batch, 3, a.size, a.size])
    compiled = core.compile_model(
        model,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": a.precision,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": a.threads,
        },
    )
    req = compiled.create_infer_request()
    x = np.random.default_rng(0).standard_normal((a.batch, 3, a.size, a.size)).astype(np.float32)
    req.infer({0: x})
    times = []
    for _ in range(a.iters):
        t = time.perf_counter()
        req.infer({0: x})
        times.append(time.perf_counter() - t)
    print(
        json.dumps(
            {
                "engine": "openvino " + ov.__version__.split("-")[0],
                "precision": a.precision,
                "exec_precision": str(compiled.get_property("INFERENCE_PRECISION_HINT")),
                "batch": a.batch,
                "threads": a.threads,
                "size": a.size,
                "median_ms": statistics.median(times) * 1e3,
                "min_ms": min(times) * 1e3,
            }
        )
    )


if __name__ == "__main__":
    main()
