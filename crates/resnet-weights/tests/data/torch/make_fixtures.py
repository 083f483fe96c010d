#!/usr/bin/env python3
"""Writes the PyTorch checkpoint fixtures of resnet-weights' tests, with PyTorch itself.

Run from this directory with a Python that has torch, torchvision and safetensors (the files
are committed; CI does not run this):

    python make_fixtures.py [--golden ../../../../../../shared/golden]

Every `.pth`/`.pt` here has a `.safetensors` twin holding the same tensors (or, for EDSR, the
golden file it was made from), so the tests can check that both load to the same values and
give the same outputs. The `hostile_*` files are pickles that run `touch MARKER` when loaded
with `torch.load(weights_only=False)` or `pickle.load`: this script checks that they really do
(so the tests' "nothing was executed" means something) and removes the marker again.
"""

import argparse
import collections
import os
import pickle
import zipfile

import torch
import torchvision
from safetensors.torch import load_file, save_file

MARKER = "/tmp/resnet-rs-hostile-marker"


def one_stage(block, classes):
    """torchvision's ResNet with only its stem and first stage (layer1), so the file is small
    but every key is torchvision's: `conv1`, `bn1`, `layer1.0.*`, `fc`."""
    torch.manual_seed(0)
    m = torchvision.models.resnet.ResNet(block, [1, 1, 1, 1], num_classes=classes)
    del m.layer2, m.layer3, m.layer4
    m.fc = torch.nn.Linear(64 * block.expansion, classes)
    # Running statistics that are not the initial 0/1, so evaluation really uses them.
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
            mod.num_batches_tracked.fill_(17)
    return m


class Hostile:
    """Unpickling this runs `touch MARKER`."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


class HostileEval:
    def __reduce__(self):
        return (eval, (f"open({MARKER!r}, 'w').close()",))


def check_hostile(path, load):
    if os.path.exists(MARKER):
        os.remove(MARKER)
    try:
        load(path)
    except Exception:
        pass
    assert os.path.exists(MARKER), f"{path} did not run its payload"
    os.remove(MARKER)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--golden", default="../../../../../../shared/golden")
    args = ap.parse_args()

    # 1. torchvision basic-block net, f32: the plain zip format, the legacy format, and a
    #    training checkpoint wrapping it under "state_dict" with DataParallel's "module." prefix.
    basic = one_stage(torchvision.models.resnet.BasicBlock, 10).eval()
    sd = basic.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, "basic.safetensors")
    torch.save(sd, "basic.pth")
    torch.save(sd, "basic_legacy.pth", _use_new_zipfile_serialization=False)
    wrapped = {
        "epoch": 7,
        "arch": "resnet18",
        "best_acc1": torch.tensor(71.25),
        "state_dict": collections.OrderedDict(("module." + k, v) for k, v in sd.items()),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]},
    }
    torch.save(wrapped, "basic_wrapped.pth")

    # 2. torchvision bottleneck net in half precision, from model.half().state_dict(), whose
    #    entries are Parameters' data (the usual case) saved from a real nn.Module.
    bottle = one_stage(torchvision.models.resnet.Bottleneck, 10).eval().half()
    sd = bottle.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, "bottleneck_f16.safetensors")
    torch.save(sd, "bottleneck_f16.pth")

    # 3. Tensors that are not contiguous or start inside a shared storage, Parameters, bf16 and
    #    integer tensors, in both formats.
    base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) / 8 - 1
    odd = collections.OrderedDict()
    odd["permuted"] = base.permute(2, 0, 1)  # strides (1, 12, 4)
    odd["row"] = base[1]  # offset 12 into base's storage
    odd["column"] = base[:, :, 2]  # offset 2, strides (12, 4)
    odd["base"] = base
    odd["param"] = torch.nn.Parameter(torch.linspace(-1, 1, 6).reshape(2, 3))
    odd["bf16"] = torch.linspace(-2, 2, 5).to(torch.bfloat16)
    odd["f64"] = torch.linspace(-3, 3, 4, dtype=torch.float64)
    odd["counter"] = torch.tensor(42)
    odd["int32"] = torch.tensor([1, -2, 3], dtype=torch.int32)
    odd["empty"] = torch.zeros(0, 3)
    save_file({k: v.detach().clone().contiguous() for k, v in odd.items()}, "strided.safetensors")
    torch.save(odd, "strided.pth")
    torch.save(odd, "strided_legacy.pth", _use_new_zipfile_serialization=False)

    # 4. EDSR: the golden tiny x3 net as EDSR's reference code saves it (torch.save of the
    #    state_dict), compared against the golden safetensors file by the tests.
    edsr = load_file(os.path.join(args.golden, "edsr_tiny_x3.safetensors"))
    torch.save(collections.OrderedDict(sorted(edsr.items())), "edsr_tiny_x3.pt")

    # 5. Hostile files: os.system in the zip format (as a whole object, and hidden inside an
    #    otherwise valid state_dict), builtins.eval, and os.system in the legacy format.
    torch.save(Hostile(), "hostile_system.pth")
    inside = collections.OrderedDict(fc_bias=torch.zeros(2))
    inside["payload"] = Hostile()
    torch.save(inside, "hostile_inside.pth")
    torch.save({"state_dict": HostileEval()}, "hostile_eval.pth")
    torch.save(Hostile(), "hostile_legacy.pth", _use_new_zipfile_serialization=False)
    with open("hostile_plain.pkl", "wb") as f:
        pickle.dump(Hostile(), f, protocol=4)

    for p in ["hostile_system.pth", "hostile_inside.pth", "hostile_eval.pth", "hostile_legacy.pth"]:
        check_hostile(p, lambda p: torch.load(p, weights_only=False))
    check_hostile("hostile_plain.pkl", lambda p: pickle.load(open(p, "rb")))

    # The valid files load with PyTorch's own safe loader, as a user's would.
    for p in ["basic.pth", "basic_legacy.pth", "basic_wrapped.pth", "bottleneck_f16.pth",
              "strided.pth", "strided_legacy.pth", "edsr_tiny_x3.pt"]:
        torch.load(p, weights_only=True)
    with zipfile.ZipFile("basic.pth") as z:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
    print("fixtures written; torch", torch.__version__)


if __name__ == "__main__":
    main()
