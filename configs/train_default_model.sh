#!/usr/bin/env bash
# Reproduce the shipped default model (wsi_pipeline/models/weights/default) from scratch:
#
#   bash configs/train_default_model.sh [DATA] [RUN_DIR]      # defaults: ../shared/data/hcd_patches runs/default
#
# Trains the two ensemble members (configs/default.yaml and default_b.yaml: the same network with
# seeds 0 and 1 on the same validation split), joins them with `wsi-pipeline ensemble --data`, which scores the ensemble on that
# split and records the figures in its config.json, then prints the copy command that ships it.
# On a 2-core CPU with 1 thread per run: ~65 + ~50 min one after another, or ~65 min with PARALLEL=2
# (both members at once); on a GPU add DEVICE=cuda.
set -euo pipefail
DATA=${1:-../shared/data/hcd_patches}
RUN=${2:-runs/default}
BIN=${WSI_BIN:-.venv/bin}
DEVICE=${DEVICE:-auto}
PARALLEL=${PARALLEL:-1}
HERE=$(cd "$(dirname "$0")" && pwd)

train_member() {  # name config
  "$BIN/wsi-train" --data "$DATA" --config "$HERE/$2" -o "$RUN/$1" --threads 1 --device "$DEVICE" --quiet
}
if [ "$PARALLEL" -ge 2 ]; then
  train_member a default.yaml &
  first=$!
  train_member b default_b.yaml &
  second=$!
  wait "$first"
  wait "$second"
else
  train_member a default.yaml
  train_member b default_b.yaml
fi
"$BIN/wsi-pipeline" ensemble "$RUN/a/model" "$RUN/b/model" \
  -o "$RUN/model" --name default-context_cnn-ensemble --data "$DATA"
echo "ship it: cp $RUN/model/model.safetensors $RUN/model/config.json wsi_pipeline/models/weights/default/"
