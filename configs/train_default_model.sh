#!/usr/bin/env bash
# Reproduce the shipped default model (wsi_pipeline/models/weights/default) from scratch:
#
#   bash configs/train_default_model.sh [DATA] [RUN_DIR]      # defaults: ../shared/data/hcd_patches runs/default
#
# Trains the two ensemble members (configs/default.yaml and default_b.yaml: the same network with
# seeds 0 and 1 on the same validation split), joins them with `wsi-pipeline ensemble --data`, which scores the ensemble on that
# split and records the figures in its config.json, then prints the copy command that ships it.
# On a quiet 2-core CPU with native bf16 (AMD EPYC Zen 5) and 1 thread per run: ~21 min per member
# (32 s per epoch), both at once with PARALLEL=2 (~69 min each on a machine shared with other jobs);
# on a GPU add DEVICE=cuda. Then record the out-of-domain statistics and fit the calibration and the
# lesion rule (commands printed at the end).
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
  -o "$RUN/model" --name default-context_cnn-hed-ensemble --data "$DATA"
"$BIN/wsi-pipeline" domain-stats "$RUN/model" --data "$DATA"
echo "fit calibration + lesion rule: $BIN/wsi-pipeline calibrate --model $RUN/model --data $DATA --in-place --seed 0 --grid 72 --negative 20 --itc 2 --micro 10 --macro 6"
echo "ship it: cp $RUN/model/model.safetensors $RUN/model/config.json $RUN/model/train_patches.u64 wsi_pipeline/models/weights/default/"
