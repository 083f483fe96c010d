#!/usr/bin/env bash
# The Python package's CI: a venv with maturin, pytest and ray[data] from PyPI, resnet_rs built
# into it, the `resnet` CLI built to compare against, then pytest (golden fixtures, the CLI,
# threads, bad inputs, and the Ray Data example on a local Ray instance).
#
# Meant to be called from .ci/run after `cargo test --workspace`: the CLI is built with the
# same `test` profile into the same target directory (mostly already built by then); the module
# is built in release mode (maturin cannot use the test profile), with thin-LTO off and 16
# codegen units to compile faster (the tests do not time anything). Environment:
#   RESNET_GOLDEN_DIR   the golden fixtures (default ../shared/golden beside the repository)
#   CARGO_TARGET_DIR    the cargo target directory (default: the workspace's target/)
#   RESNET_PY_VENV      the venv to (re)use (default: $CARGO_TARGET_DIR/py-venv)
#   RESNET_CLI          a `resnet` binary to compare against (default: build it)
#   RESNET_PY_NO_RAY=1  leave out ray[data] (the Ray test then skips, saying so)
set -euo pipefail
cd "$(dirname "$0")"
CRATE="$(pwd)"
REPO="$(cd ../.. && pwd)"
export RESNET_GOLDEN_DIR="${RESNET_GOLDEN_DIR:-$(cd "$REPO/../shared/golden" && pwd)}"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
export CARGO_TARGET_DIR="$TARGET"
VENV="${RESNET_PY_VENV:-$TARGET/py-venv}"
PYTHON="${PYTHON:-python3}"
start=$(date +%s)

echo "== python venv ($VENV) with maturin, pytest, numpy, pyarrow${RESNET_PY_NO_RAY:+ (no ray)}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
pkgs=("maturin>=1.7,<2" pytest numpy pyarrow)
if [ -z "${RESNET_PY_NO_RAY:-}" ]; then
  pkgs+=("ray[data]")
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${pkgs[@]}"

if [ -z "${RESNET_CLI:-}" ]; then
  echo "== the resnet CLI (profile test, as cargo test builds it)"
  cargo build -q --profile test -p resnet-cli
  export RESNET_CLI="$TARGET/debug/resnet"
fi
export RESNET_CLI

echo "== resnet_rs into the venv (maturin develop --release)"
# maturin develop needs VIRTUAL_ENV; no `activate` so that nothing else of the shell changes.
VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  "$VENV/bin/maturin" develop -q --release -m "$CRATE/Cargo.toml"

echo "== pytest"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$CRATE/tests"
echo "resnet-py ci.sh took $(($(date +%s) - start)) s"
