#!/usr/bin/env bash
# Installs the peer of benchmarks/meta_step.py --peer learn2learn into an existing metajax venv.
# Usage: bash benchmarks/install_peer.sh [VENV]   (default: the active one, $VIRTUAL_ENV)
#
# learn2learn 0.2.0 is published only as an sdist whose pre-generated C files do not compile on
# Python >= 3.11 (longintrepr.h moved), so they are regenerated with Cython first. Its gsutil and
# old-numpy pins are not needed for learn2learn.algorithms/vision and are left out; numpy is put
# back to the version jax needs afterwards. torch/torchvision: any matching pair works.
set -euo pipefail
venv=${1:-${VIRTUAL_ENV:?activate the metajax venv or pass its path}}
pip="$venv/bin/pip"
torch_spec=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
numpy_version=$("$venv/bin/python" -c 'import numpy; print(numpy.__version__)')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# shellcheck disable=SC2086
"$pip" install $torch_spec cython setuptools wheel
"$pip" download learn2learn==0.2.0 --no-deps --no-binary :all: -d "$work"
tar xzf "$work"/learn2learn-0.2.0.tar.gz -C "$work"
(cd "$work/learn2learn-0.2.0" &&
 for f in learn2learn/data/meta_dataset learn2learn/data/task_dataset learn2learn/data/transforms; do
   "$venv/bin/cython" -3 "$f.pyx" -o "$f.c"
 done &&
 "$pip" install --no-deps --no-build-isolation .)
"$pip" install gym qpth scipy tqdm requests
"$pip" install "numpy==$numpy_version"
(cd "$work" && "$venv/bin/python" -c 'import learn2learn, torch; print("learn2learn", learn2learn.__version__, "torch", torch.__version__)')
