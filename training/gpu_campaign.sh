#!/usr/bin/env bash
# One prepared GPU campaign: detector v2 and restorer v2 (and its ablation) at GPU scale with bf16,
# about 10 minutes on one lent H200, then held-out evaluation (with and without the guard, project and
# held-out renderers) and the CUDA benchmark. Needs nothing from the network.
#
#   training/gpu_campaign.sh PHOTOS_DIR
#
# PHOTOS_DIR holds train/ and val/ (python -m engine.training.photos; photos are never committed, see
# training/README.md, "GPU campaign", for making them and for packing them small enough to travel).
# Environment (all optional):
#   OUT          where the results go (default: WORK/out). On a lent machine, the tool's $OUT.
#   WORK         run folders, resumed when present (default: runs/gpu_campaign; not under OUT, whose
#                files are fetched back: at most 8 of them)
#   SCALE        scale file (default: training/gpu_scale.toml; a test passes a tiny one)
#   DEVICE       cuda (default), cpu, auto
#   BENCH_SIZES  megapixels for `photomend bench` (default 1,4,12; "none" skips it)
#   PYTHON       interpreter (default: .venv/bin/python when present, else python3)
# A folder .whl/ of wheels (packages the machine's image lacks: open_clip_torch, albumentations, ...)
# is installed into /tmp/site first.
#
# OUT receives at most 7 files: report.md (evaluation, detection, benchmark), campaign.log,
# logs.tar.gz (every run's log.jsonl and the evaluation CSVs) and weights.tar.partNN, the bundle
# (detector + restorer) and the ablation restorer, split into 15 MB pieces:
#   cat weights.tar.part* | tar -x     ->  bundle/ (a model folder for --model) and ablation/
set -euo pipefail
cd "$(dirname "$0")/.."

PHOTOS=${1:?usage: training/gpu_campaign.sh PHOTOS_DIR  (with train/ and val/; see training/README.md)}
WORK=${WORK:-runs/gpu_campaign}
OUT=${OUT:-$WORK/out}
SCALE=${SCALE:-training/gpu_scale.toml}
DEVICE=${DEVICE:-cuda}
BENCH_SIZES=${BENCH_SIZES:-1,4,12}
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1

if [ -d .whl ] && compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

mkdir -p "$WORK" "$OUT"
LOG="$OUT/campaign.log"
{
    echo "gpu_campaign: $(date -u +%FT%TZ) photos=$PHOTOS work=$WORK scale=$SCALE device=$DEVICE"
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
} 2>&1 | tee "$LOG"

"$PYTHON" -m engine.training.campaign run "$PHOTOS" "$WORK" --scale "$SCALE" --device "$DEVICE" 2>&1 | tee -a "$LOG"

cp "$WORK/report.md" "$OUT/report.md"
if [ "$BENCH_SIZES" != "none" ]; then
    "$PYTHON" -m engine bench --device "$DEVICE" --model "$WORK/bundle" --sizes "$BENCH_SIZES" \
        --out "$WORK/bench.md" 2>&1 | tee -a "$LOG"
    { echo; echo "## Benchmark (photomend bench --device $DEVICE --sizes $BENCH_SIZES)"; echo; cat "$WORK/bench.md"; } \
        >> "$OUT/report.md"
fi

(cd "$WORK" && tar -czf - $(ls -d detector/log.jsonl restorer/log.jsonl ablation/log.jsonl eval_*.csv 2>/dev/null)) \
    > "$OUT/logs.tar.gz"
weights="bundle"
[ -f "$WORK/ablation/restorer.safetensors" ] && weights="$weights ablation/restorer.json ablation/restorer.safetensors"
rm -f "$OUT"/weights.tar.part*
(cd "$WORK" && tar -cf - $weights) | split -b 15M -d - "$OUT/weights.tar.part"
echo "gpu_campaign: done; results in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')" | tee -a "$LOG"
