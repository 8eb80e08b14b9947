#!/usr/bin/env bash
# `make demo`: profile a Criteo-Kaggle-shaped workload, plan it for 8 GPUs, print the report.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${OUT:-out/demo}
mkdir -p "$OUT"
export PYTHONWARNINGS=ignore TORCH_CPP_LOG_LEVEL=ERROR

echo "== 1/2 profile: 200 batches x 8192 samples of Zipf(1.05) ids over the 26 Criteo Kaggle tables"
"$BIN/torchrec-hot" profile --synthetic criteo-kaggle --alpha 1.05 --batches 200 \
    --batch-size 8192 --embedding-dim 128 --out "$OUT/profile.npz"

echo "== 2/2 plan: 8 x CUDA GPUs, 128 MiB of HBM per GPU for embedding rows, row-wise Adagrad"
"$BIN/torchrec-hot" plan --profile "$OUT/profile.npz" --world-size 8 --hbm-gb 0.125 \
    --compute-device cuda --batch-size 8192 --optimizer rowwise_adagrad \
    --module-path sparse_arch.embedding_bag_collection --out "$OUT/plan.json"
echo "plan and hot ids written to $OUT/ (torchrec-hot report $OUT/plan.json prints it again)"
