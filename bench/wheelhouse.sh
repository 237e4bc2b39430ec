#!/usr/bin/env bash
# Wheels for what the lent GPU machine lacks, for bench/gpu.py there: it reaches no package index.
#
#   bench/wheelhouse.sh [DIR]          # default DIR: wheelhouse/ (ignored by git), ~14 MB
#
# The machine already has torch, cupy-cuda13x, NCCL, numba-cuda, mpi4py, ml-dtypes, pytest (+xdist,
# +timeout), hypothesis, safetensors, typer, rich, pyyaml, regex, attrs and markdown-it-py (the device
# tool's KINDS.md); it lacks jupytext with its nbformat stack, and mpich (mpiexec). --no-deps with each
# needed package named keeps a single version of each and shadows nothing the machine has. nbgrader
# and jupyter-book are not brought: the grading and book tests skip without them.
# Install there (see bench/gpu.py's docstring):
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site wheelhouse/*.whl
#   export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-wheelhouse}
python=${PYTHON:-.venv/bin/python}
missing=(jupytext mdit-py-plugins nbformat fastjsonschema jsonschema jsonschema-specifications referencing
         rpds-py jupyter-core traitlets platformdirs mpich)
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$dest" "${missing[@]}"
du -sh "$dest"
