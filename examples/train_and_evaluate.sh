#!/usr/bin/env bash
# Train the origin study's model and the default recipe, evaluate both, and export one for wsinfer.
set -euo pipefail
DATA=${1:-../shared/data/hcd_patches}

wsi-train --data "$DATA" -o runs/study                                   # seed_cnn, the study's settings
wsi-train --data "$DATA" --config configs/default.yaml -o runs/default   # the shipped default's recipe
wsi-eval --data "$DATA" --model runs/default/model --sample 1000 --tta --json runs/default/eval.json --plots runs/default/plots
wsi-pipeline export --format torchscript --model runs/default/model -o runs/default/torchscript
