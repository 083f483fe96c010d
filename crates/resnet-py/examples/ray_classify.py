"""Classify (and optionally embed) a directory of images with Ray Data; write Parquet.

    python ray_classify.py IMAGES --weights resnet18.safetensors --out preds/ \
        [--actors 2] [--threads 1] [--batch 8] [--top 5] [--embed] [--engine resnet_rs|torch]

The images are read as bytes (`ray.data.read_binary_files`, so a bucket works as well as a
local folder: the workers need no shared file system), decoded and preprocessed inside each
actor, and classified by `map_batches` over a pool of `--actors` actors, each holding one model
that runs on `--threads` threads (the actor reserves as many CPUs, so Ray places
`CPUs per node / threads` actors on a node). The Parquet files in `--out` hold one row per image:
`path`, `indices`, `names`, `probabilities` (the top `--top`, most probable first) and, with
`--embed`, `embedding` (the pooled features).

`--engine torch` runs the same job with `torchvision.models.resnet18` loaded from the same
safetensors file (PIL + torchvision's eval transform), for comparison; it needs torch,
torchvision and safetensors importable by the workers. `--address` connects to a running
cluster (`auto`, or `ray://head:10001`); without it a local Ray instance is started with
`--num-cpus` CPUs. The last line printed is a JSON summary with images/s.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import pyarrow as pa


# What `resnet classify DIR` picks from a directory.
IMAGE_EXTENSIONS = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]
IMAGE_EXTENSIONS += [e.upper() for e in IMAGE_EXTENSIONS]


def _schema(k, embed):
    fields = [
        ("path", pa.string()),
        ("indices", pa.list_(pa.int64())),
        ("names", pa.list_(pa.string())),
        ("probabilities", pa.list_(pa.float32())),
    ]
    if embed:
        fields.append(("embedding", pa.list_(pa.float32())))
    return pa.schema(fields)


class ResNetRsClassifier:
    """One resnet_rs model per actor; `__call__` gets a batch of encoded images."""

    def __init__(self, weights, threads, k, embed):
        import resnet_rs

        self.model = resnet_rs.ResNet.from_file(weights, threads=threads)
        self.k, self.embed = k, embed

    def __call__(self, batch):
        images = [bytes(b) for b in batch["bytes"]]
        rows = self.model.classify(images, k=self.k)  # decodes and preprocesses in Rust
        cols = {
            "path": list(batch["path"]),
            "indices": [[r[0] for r in row] for row in rows],
            "names": [[r[1] for r in row] for row in rows],
            "probabilities": [[r[2] for r in row] for row in rows],
        }
        if self.embed:
            x = np.concatenate([self.model.preprocess(b) for b in images])
            cols["embedding"] = list(self.model.features(x))
        return pa.table(cols, schema=_schema(self.k, self.embed))


class TorchClassifier:
    """The same job with torchvision's resnet18 on the same weights."""

    def __init__(self, weights, threads, k, embed):
        import torch
        import torchvision
        from safetensors.torch import load_file
        from torchvision import transforms

        torch.set_num_threads(threads)
        sd = {n: (t.float() if t.is_floating_point() else t) for n, t in load_file(weights).items()}
        model = torchvision.models.resnet18(num_classes=sd["fc.weight"].shape[0])
        model.load_state_dict(sd)
        self.model = model.eval()
        self.tf = transforms.Compose(
            [
                transforms.Resize(256),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            ]
        )
        names = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "imagenet_classes.txt")
        with open(names) as f:
            self.names = [line.strip() for line in f if line.strip()]
        self.k, self.embed, self.torch = k, embed, torch

    def __call__(self, batch):
        import io

        from PIL import Image

        torch = self.torch
        x = torch.stack([self.tf(Image.open(io.BytesIO(bytes(b))).convert("RGB")) for b in batch["bytes"]])
        with torch.inference_mode():
            logits = self.model(x)
            p, i = torch.softmax(logits, dim=1).topk(self.k, dim=1)
        cols = {
            "path": list(batch["path"]),
            "indices": i.tolist(),
            "names": [[self.names[c] for c in row] for row in i.tolist()],
            "probabilities": p.tolist(),
        }
        if self.embed:
            with torch.inference_mode():
                m = self.model
                f = torch.nn.Sequential(*list(m.children())[:-1])(x).flatten(1)
            cols["embedding"] = list(f.numpy())
        return pa.table(cols, schema=_schema(self.k, self.embed))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", help="a directory (or bucket URI) of images")
    ap.add_argument("--weights", required=True, help="a safetensors file readable by every worker")
    ap.add_argument("--out", required=True, help="output directory for the Parquet files")
    ap.add_argument("--actors", type=int, default=2, help="actors in the pool (one model each)")
    ap.add_argument("--threads", type=int, default=1, help="threads per model (CPUs per actor)")
    ap.add_argument("--batch", type=int, default=8, help="images per map_batches call")
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--embed", action="store_true", help="also write the pooled embedding")
    ap.add_argument("--engine", choices=["resnet_rs", "torch"], default="resnet_rs")
    ap.add_argument("--address", default=None, help="a running cluster (default: start a local one)")
    ap.add_argument(
        "--num-cpus", type=int, default=None,
        help="logical CPUs of the local instance (default: cores, at least actors x threads + 1)",
    )
    a = ap.parse_args(argv)

    import ray

    if a.address:
        ray.init(address=a.address)
    else:
        # The actors hold actors x threads CPUs for the whole job; reading and writing the
        # Parquet files need one more, or the job waits for ever.
        cpus = a.num_cpus or max(os.cpu_count() or 1, a.actors * a.threads + 1)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False

    cls = ResNetRsClassifier if a.engine == "resnet_rs" else TorchClassifier
    weights = os.path.abspath(a.weights) if os.path.exists(a.weights) else a.weights
    # Reading is I/O: a small CPU share keeps it from waiting for CPUs the actors hold.
    ds = ray.data.read_binary_files(
        a.images, include_paths=True, file_extensions=IMAGE_EXTENSIONS, num_cpus=0.1
    )
    t0 = time.perf_counter()
    out = ds.map_batches(
        cls,
        fn_constructor_kwargs={"weights": weights, "threads": a.threads, "k": a.top, "embed": a.embed},
        batch_size=a.batch,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=a.actors),
        num_cpus=a.threads,
    )
    out.write_parquet(a.out)
    seconds = time.perf_counter() - t0
    n = ray.data.read_parquet(a.out).count()
    summary = {
        "engine": a.engine,
        "images": n,
        "seconds": round(seconds, 3),
        "images_per_s": round(n / seconds, 2),
        "actors": a.actors,
        "threads": a.threads,
        "batch": a.batch,
    }
    print(json.dumps(summary))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
