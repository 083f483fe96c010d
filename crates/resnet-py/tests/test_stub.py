"""The type stub names what the module has, and every public item has a docstring."""

import ast
from pathlib import Path

import resnet_rs

STUB = Path(__file__).resolve().parents[1] / "resnet_rs.pyi"


def test_stub_matches_module():
    tree = ast.parse(STUB.read_text())
    top = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    public = {n for n in dir(resnet_rs) if not n.startswith("_")}
    public -= {"resnet_rs"}  # maturin's submodule alias, when present
    assert top == public
    for cls in [n for n in tree.body if isinstance(n, ast.ClassDef)]:
        members = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
        actual = {n for n in dir(getattr(resnet_rs, cls.name)) if not n.startswith("_")}
        if cls.name == "WeightsError":
            continue
        assert members == actual, cls.name


def test_docstrings():
    for name in ["ResNet", "Edsr", "WeightsError", "preprocess", "load_rgb"]:
        assert getattr(resnet_rs, name).__doc__, name
    for cls in [resnet_rs.ResNet, resnet_rs.Edsr]:
        for name in dir(cls):
            if not name.startswith("_"):
                assert getattr(cls, name).__doc__, f"{cls.__name__}.{name}"
