#!/usr/bin/env bash
# `make demo`: profile -> plan -> report for 8 GPUs, then 2-rank CPU training, hot/cold vs stock.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${OUT:-out/demo}
mkdir -p "$OUT"
export PYTHONWARNINGS=ignore TORCH_CPP_LOG_LEVEL=ERROR

echo "== 1/4 profile: 200 batches x 8192 samples of Zipf(1.05) ids over the 26 Criteo Kaggle tables"
echo "   (the ids of the first 32 batches kept as a trace for the strategy evaluation)"
"$BIN/torchrec-hot" profile --synthetic criteo-kaggle --alpha 1.05 --batches 200 \
    --batch-size 8192 --embedding-dim 128 --trace-ids 6815744 --out "$OUT/kaggle.npz"

echo "== 2/4 plan: 8 x CUDA GPUs, 128 MiB of HBM per GPU for embedding rows, row-wise Adagrad;"
echo "   per table static split, UVM cache or look-forward prefetch, by the H100 cost model"
"$BIN/torchrec-hot" plan --profile "$OUT/kaggle.npz" --world-size 8 --hbm-gb 0.125 \
    --compute-device cuda --batch-size 8192 --optimizer rowwise_adagrad --strategies \
    --module-path model.sparse_arch.embedding_bag_collection --out "$OUT/plan_8gpu.json"

echo "== 3/4 profile a 1%-scale Criteo Kaggle DLRM (dim 16) for 2 CPU ranks"
"$BIN/torchrec-hot" profile --synthetic criteo-kaggle --scale 0.01 --alpha 1.05 --batches 50 \
    --batch-size 1024 --embedding-dim 16 --seed 1 --out "$OUT/small.npz"

echo "== 4/4 train DLRM on 2 gloo ranks, 300 steps through TorchRec's TrainPipelineSparseDist:"
echo "   stock TorchRec, then hot/cold planned in the job the TorchRec way"
echo "   (HotShardingPlanner.collective_plan -> apply_hot_plan -> DistributedModelParallel),"
echo "   2 MiB of HBM per rank for rows, same batches; the plan's report: $OUT/train.stdout"
"$BIN/torchrun" --nproc_per_node 2 --log-dir "$OUT/torchrun" --redirects 0:0,1:3 \
    examples/train_dlrm.py --profile "$OUT/small.npz" --hbm-gb 0.002 --compare --steps 300 \
    --batch-size 256 2> "$OUT/train.stderr" | grep -v "^\[" | tee "$OUT/train.stdout" \
    | sed -n '/^2 ranks/,$p'
