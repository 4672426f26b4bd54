#!/usr/bin/env bash
# The GPU figures of docs/performance.md: the ImageNet presets at 224 px on one GPU, bfloat16 compute
# (model.compute_dtype=auto), lax convolutions (model.conv_impl=auto), synthetic data.
#
#   bash launch/benchmark_gpu.sh [global batch, default 256] [timed steps, default 20]
#
# Writes <preset>.txt (human-readable + the JSON line) per preset and gpu.txt into $OUT
# (or ./benchmark_gpu/). Each preset runs in its own process, so one failure does not
# stop the others; the most important preset goes first. PRESETS="a b" picks presets,
# EXTRA_FLAGS="--config.data.image_size=32" adds flags (a quick check on a CPU). PEER=<a clone of
# github.com/JindongGu/SimDis> then races the authors' PyTorch step against ours on the same device
# (benchmark --peer; PEER_PRESETS picks the presets, PEER_ROUNDS the rounds), written to peer_<preset>.txt.
set -uo pipefail
batch=${1:-256}
steps=${2:-20}
out=${OUT:-benchmark_gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" 2>&1 | tee -a "$out/gpu.txt"
for name in ${PRESETS:-simdis_on_7v simdis_on simdis_off byol_r50_teacher byol_r18}; do
  start=$(date +%s)
  timeout "${PRESET_TIMEOUT_S:-170}" python3 -m simdis_jax.benchmark --config "configs/imagenet/$name.py" \
      --config.train.batch_size="$batch" --steps "$steps" ${EXTRA_FLAGS:-} > "$out/$name.txt" 2>&1
  rc=$?
  echo "== $name rc=$rc wall=$(( $(date +%s) - start ))s"
  grep -v '^{' "$out/$name.txt" | tail -n 22
done
if [ -n "${PEER:-}" ]; then
  for name in ${PEER_PRESETS:-byol_r18 simdis_on_7v byol_r50_teacher}; do
    start=$(date +%s)
    timeout "${PRESET_TIMEOUT_S:-170}" python3 -m simdis_jax.benchmark --config "configs/imagenet/$name.py" \
        --config.train.batch_size="$batch" --peer "$PEER" --rounds "${PEER_ROUNDS:-3}" ${EXTRA_FLAGS:-} \
        > "$out/peer_$name.txt" 2>&1
    rc=$?
    echo "== peer $name rc=$rc wall=$(( $(date +%s) - start ))s"
    grep -v '^{' "$out/peer_$name.txt" | tail -n 10
  done
fi
