#!/usr/bin/env bash
# One GPU training run of the U-Net + text encoder in ONE device call, on the shipped model's VAE
# (models/denoise-emoji, so no VAE training and nothing large to carry): time-boxed training with a
# learning-rate cooldown at the end, an f16 diffusers export (EMA, and the raw weights if they fit),
# eval.py's score (top-1/top-5, contact sheet, seed sheet), and all of it packed under $OUT within
# the device tool's limits (at most 8 files of at most 16 MiB, 64 MiB in all).
#
# Once, where the data set and the classifier are (no GPU needed):
#     /usr/bin/python3 train/pack_data.py      # -> .train-data/ (git-ignored, ~17 MiB)
# Then, with the device tool, from the repository root:
#     run(command="bash train/device_run.sh", carry=[".train-data"], timeout_s=540)
# It ends after about MINUTES + 1.5 minutes (7.5 by default), and never later than DEADLINE
# seconds (525) after it started: every stage gets what is left minus what the later ones need.
#
# Back under $OUT: log.txt (everything printed, with timings), eval.json, contact_sheet.png, and
# bundle.tar.0, .1, … (one tar split in 15 MiB parts: `cat bundle.tar.* | tar x`) holding model/
# (the exported EMA folder), raw/ (the raw U-Net and text encoder, when they fit: copy raw/unet and
# raw/text_encoder over model/'s to use them), samples/ (a sheet per checkpoint),
# unet_log.jsonl, eval.json, contact_sheet.png, seeds.png, timings.json. The resumable checkpoint
# ($RUN/unet.pt, with optimizer state) is too large to come back; it stays on the machine while it
# is warm, and the same command then resumes from it (at the cooled-down rate: RUN=/tmp/x starts anew).
#
# Knobs (environment): MINUTES (training, 6), COOLDOWN (minutes of lr cooldown at its end, 1.5),
# CHANNELS (32,64,128), LAYERS (1), TEXT_LAYERS (2), WIDTH (128), BATCH (256), LR (1e-3),
# WARMUP (500), EVERY (checkpoint minutes, 1.5), DEVICE (default: cuda if present), AMP (auto),
# THREADS (8), EVAL_STEPS (20), SEEDS (16), PY (python3), DATA (.train-data/emoji),
# CLASSIFIER (.train-data/classifier.pt), VAE_FROM (models/denoise-emoji), RUN (/tmp/denoise-device-run),
# DEADLINE (525 s; keep it under the call's timeout_s).
#
# CPU smoke test (here, no GPU): OUT=/tmp/dr-out RUN=/tmp/dr-run MINUTES=0.5 COOLDOWN=0.2 BATCH=16 \
#   THREADS=1 EVAL_STEPS=2 SEEDS=2 PY=/usr/bin/python3 OMP_WAIT_POLICY=PASSIVE nice -n 15 bash train/device_run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?OUT: the folder whose files come back (the device tool sets it)}"
MINUTES=${MINUTES:-6} COOLDOWN=${COOLDOWN:-1.5} CHANNELS=${CHANNELS:-32,64,128} LAYERS=${LAYERS:-1}
TEXT_LAYERS=${TEXT_LAYERS:-2} WIDTH=${WIDTH:-128} BATCH=${BATCH:-256} LR=${LR:-1e-3} WARMUP=${WARMUP:-500}
EVERY=${EVERY:-1.5} DEVICE=${DEVICE:-} AMP=${AMP:-auto} THREADS=${THREADS:-8} EVAL_STEPS=${EVAL_STEPS:-20}
SEEDS=${SEEDS:-16} PY=${PY:-python3} DATA=${DATA:-.train-data/emoji} CLASSIFIER=${CLASSIFIER:-.train-data/classifier.pt}
VAE_FROM=${VAE_FROM:-models/denoise-emoji} RUN=${RUN:-/tmp/denoise-device-run} DEADLINE=${DEADLINE:-525}
PART=15 # MiB per returned part; at most 5 parts + 3 small files = 8 files
TAR_MAX=$((62 * 1024 * 1024))
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
mkdir -p "$OUT" "$RUN"

stamp() { printf '[%4d s] %s\n' "$SECONDS" "$*"; }
left() { # seconds left, keeping $1 for the later stages (at least 1: `timeout 0` would mean none)
  local s=$((DEADLINE - SECONDS - $1))
  echo $((s < 1 ? 1 : s))
}
declare -A took

preflight() {
  local missing=0
  for f in "$CLASSIFIER" "$VAE_FROM/vae/config.json" "$VAE_FROM/vae/diffusion_pytorch_model.safetensors" \
    "$VAE_FROM/tokenizer/merges.txt" "$VAE_FROM/training.json" "$DATA/items.json" "$DATA/concepts.json"; do
    [ -e "$f" ] || { echo "missing: $f"; missing=1; }
  done
  if [ ! -e "$DATA/images_64.npy" ] && [ ! -e "$DATA/images_64.npy.xz" ]; then
    echo "missing: $DATA/images_64.npy(.xz)"
    missing=1
  fi
  if [ $missing = 1 ]; then
    echo "pack the data and the classifier first (/usr/bin/python3 train/pack_data.py) and carry .train-data"
    return 1
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi -L
  "$PY" -c 'import torch, numpy; c = torch.cuda.is_available()
print("torch", torch.__version__, "numpy", numpy.__version__, "cuda", c, torch.cuda.get_device_name(0) if c else "")'
}

train() { # extra flags: "$@"; time box: what is left of MINUTES, within DEADLINE
  local minutes limit
  # the trainer's own time box (it starts counting after ~15 s of loading, and ends with a checkpoint),
  # and a hard limit after which it gets SIGTERM (it checkpoints and stops), leaving 90 s for the rest
  minutes=$("$PY" -c "print(round(max(0.05, min($MINUTES - ($SECONDS - $t_train) / 60, ($(left 90) - 45) / 60)), 2))")
  limit=$(left 90)
  stamp "train: $minutes min (cooldown over the last $COOLDOWN), U-Net $CHANNELS × $LAYERS, text $WIDTH ×" \
    "$TEXT_LAYERS, batch $BATCH, lr $LR; hard limit $limit s"
  timeout -k 20 "$limit" "$PY" train/train.py unet --data "$DATA" --run "$RUN" --vae-from "$VAE_FROM" \
    --clip-merges "$VAE_FROM/tokenizer/merges.txt" --unet-channels "$CHANNELS" --layers "$LAYERS" \
    --text-layers "$TEXT_LAYERS" --width "$WIDTH" --batch "$BATCH" --lr "$LR" --warmup "$WARMUP" \
    --minutes "$minutes" --cooldown-min "$COOLDOWN" --every-min "$EVERY" --log-every 50 --threads "$THREADS" \
    ${DEVICE:+--device "$DEVICE"} --amp "$AMP" "$@"
}

export_and_score() {
  local t=$SECONDS merges="$VAE_FROM/tokenizer/merges.txt"
  stamp "export: EMA weights -> $RUN/model, raw U-Net and text encoder -> $RUN/raw (f16)"
  timeout "$(left 60)" "$PY" train/export.py --run "$RUN" --out "$RUN/model" --clip-merges "$merges" || return 1
  if timeout "$(left 50)" "$PY" train/export.py --run "$RUN" --out "$RUN/raw" --clip-merges "$merges" --raw; then
    rm -rf "$RUN/raw/vae" "$RUN/raw/tokenizer" "$RUN/raw/scheduler" # the same as model/'s
  else
    rm -rf "$RUN/raw"
  fi
  took[export]=$((SECONDS - t))
  t=$SECONDS
  stamp "eval.py score ($EVAL_STEPS DDIM steps, $SEEDS seeds per sheet prompt)"
  timeout "$(left 10)" "$PY" train/eval.py score --model "$RUN/model" --data "$DATA" --classifier "$CLASSIFIER" \
    --steps "$EVAL_STEPS" --seeds "$SEEDS" --json "$RUN/eval.json" --sheet "$RUN/contact_sheet.png" \
    --seed-sheet "$RUN/seeds.png" ${DEVICE:+--device "$DEVICE"}
  local rc=$?
  took[eval]=$((SECONDS - t))
  return $rc
}

bundle() { # one tar of what matters, split into parts that the device tool brings back
  local items=() f size raw_size with_raw=""
  for f in model samples unet_log.jsonl eval.json contact_sheet.png seeds.png timings.json; do
    [ -e "$RUN/$f" ] && items+=("$f")
  done
  [ ${#items[@]} = 0 ] && { stamp "nothing to bundle"; return 1; }
  tar -cf "$RUN/bundle.tar" -C "$RUN" "${items[@]}"
  size=$(stat -c %s "$RUN/bundle.tar")
  if [ -d "$RUN/raw" ]; then
    raw_size=$(du -sb "$RUN/raw" | cut -f1)
    if [ $((size + raw_size + 65536)) -le $TAR_MAX ]; then
      tar -cf "$RUN/bundle.tar" -C "$RUN" "${items[@]}" raw
      size=$(stat -c %s "$RUN/bundle.tar")
      with_raw=" raw"
    else
      stamp "raw/ ($((raw_size / 1048576)) MiB) left out: the bundle would pass $((TAR_MAX / 1048576)) MiB"
    fi
  fi
  if [ "$size" -gt $TAR_MAX ]; then
    stamp "bundle.tar is $((size / 1048576)) MiB, over $((TAR_MAX / 1048576)): only the small files come back"
    return 1
  fi
  split -b ${PART}m -d -a 1 "$RUN/bundle.tar" "$OUT/bundle.tar."
  for f in eval.json contact_sheet.png; do [ -e "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"; done
  stamp "bundle: $((size / 1048576)) MiB in $(ls "$OUT"/bundle.tar.* | wc -l) part(s): ${items[*]}$with_raw"
}

main() {
  local status=0
  stamp "device_run: OUT=$OUT RUN=$RUN DEADLINE=${DEADLINE}s"
  preflight || return 1
  took[preflight]=$SECONDS
  t_train=$SECONDS
  train
  local rc=$?
  if [ $rc = 124 ] && [ -e "$RUN/unet.pt" ]; then
    stamp "the trainer reached its hard limit: it checkpointed on SIGTERM and stopped"
  elif [ $rc != 0 ]; then
    if [ ! -e "$RUN/unet.pt" ] && [ "$AMP" != off ]; then
      stamp "training failed before its first checkpoint: once more in float32 (--amp off)"
      train --amp off || status=1
    else
      status=1
    fi
  fi
  took[train]=$((SECONDS - t_train))
  if [ -e "$RUN/unet.pt" ]; then
    export_and_score || status=1
  else
    stamp "no checkpoint: nothing to export"
    status=1
  fi
  local timings="{"
  for k in "${!took[@]}"; do timings+="\"$k\": ${took[$k]}, "; done
  echo "$timings\"total\": $SECONDS}" >"$RUN/timings.json"
  bundle || status=1
  [ -e "$RUN/eval.json" ] && "$PY" -c "import json; r = json.load(open('$RUN/eval.json')); s = r.get('over_seeds', {})
print('labels', r['label'], 'paraphrases', r['paraphrase'], 'over seeds', s.get('top1'), s.get('top5'))"
  stamp "done (status $status): $(ls "$OUT" | tr '\n' ' ')"
  return $status
}

main 2>&1 | tee "$OUT/log.txt"
