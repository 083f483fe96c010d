"""The Python binding's per-call overhead: `ResNet.forward` from Python against the Rust API.

    python bench_overhead.py --weights resnet18.safetensors --cli target/release/resnet \
        [--threads 2] [--iters 30] [--cases 1x224,32x224,1x16,32x16]

For each case (batch x size) it times `resnet bench --weights W --batch B --size S --threads T
--iters N --json` (the Rust API: `ResNet::forward` on a zero tensor, median of N after one
untimed call) and then `m.forward(x)` from Python on the same zero array, the same way, in
the same process order, three rounds interleaved; it prints the medians of the rounds' medians
and their difference (the overhead: argument checks, the NaN scan, the GIL release and the
output array). Small inputs make the difference visible above the run-to-run noise.
"""

import argparse
import json
import statistics
import subprocess
import time

import numpy as np

import resnet_rs


def py_median(m, x, iters):
    m.forward(x)
    t = []
    for _ in range(iters):
        t0 = time.perf_counter()
        m.forward(x)
        t.append(time.perf_counter() - t0)
    return statistics.median(t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default="1x224,32x224,1x16,32x16")
    a = ap.parse_args()
    m = resnet_rs.ResNet.from_file(a.weights, threads=a.threads)
    rows = []
    for case in a.cases.split(","):
        b, s = map(int, case.split("x"))
        x = np.zeros((b, m.in_channels, s, s), dtype=np.float32)
        rust, py = [], []
        for _ in range(a.rounds):
            out = subprocess.run(
                [a.cli, "bench", "--weights", a.weights, "--batch", str(b), "--size", str(s),
                 "--threads", str(a.threads), "--iters", str(a.iters), "--json"],
                check=True, capture_output=True, text=True,
            ).stdout
            rust.append(json.loads(out.strip().splitlines()[-1])["median_ms"] / 1e3)
            py.append(py_median(m, x, a.iters))
        r, p = statistics.median(rust), statistics.median(py)
        row = {"batch": b, "size": s, "threads": a.threads, "rust_ms": round(r * 1e3, 3),
               "python_ms": round(p * 1e3, 3), "overhead_us": round((p - r) * 1e6, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("| batch | input | threads | Rust API median ms | Python median ms | difference µs |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['batch']} | {r['size']}x{r['size']} | {r['threads']} | {r['rust_ms']:.3f} | "
              f"{r['python_ms']:.3f} | {r['overhead_us']:+.1f} |")


if __name__ == "__main__":
    main()
