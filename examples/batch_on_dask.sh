#!/usr/bin/env bash
# Process a folder of slides on Dask: locally, then on an existing cluster.
set -euo pipefail
SLIDES=${1:?usage: batch_on_dask.sh SLIDE_DIR [OUT]}
OUT=${2:-results}

# 1. a local cluster of worker processes (one per GPU, or --workers N on CPU)
wsi-infer "$SLIDES" -o "$OUT" --workers 2

# 2. re-running skips slides already done with the same model and parameters
wsi-infer "$SLIDES" -o "$OUT" --workers 2

# 3. an existing cluster: `dask scheduler` on the head node, then on each GPU node
#    `CUDA_VISIBLE_DEVICES=0 dask worker tcp://HEAD:8786 --nworkers 1 --nthreads 1` (one per GPU)
# wsi-infer "$SLIDES" -o "$OUT" --scheduler tcp://HEAD:8786

column -s, -t < "$OUT/run_summary.csv"
