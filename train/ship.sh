#!/usr/bin/env bash
# Ships the latest checkpoint of a training run as the bundled model: exports the EMA weights to
# models/denoise-emoji (f16 diffusers folder), rewrites the engine-equivalence fixture
# tests/fixtures/denoise-emoji, scores the model (train/results/eval.json, contact_sheet.png, seeds.png, one
# more row in checkpoints.json) and refreshes train/results/ for notebooks/04_training.ipynb.
# Then: run tests/pipeline/emoji_model_test.ts, update the numbers in README.md and train/README.md,
# and commit (each commit of the weights adds ~17 MB to the history: ship only real improvements).
#
# Runs at nice 5: above a trainer at nice 10 (it is done in minutes), below interactive work.
#
# usage: bash train/ship.sh [RUN [--raw]]    (default RUN: /var/tmp/denoise-train/run1; --raw ships
#        the raw weights instead of the EMA ones, e.g. at the end of a learning-rate cooldown)
set -euo pipefail
cd "$(dirname "$0")"
run="${1:-/var/tmp/denoise-train/run1}"
shift || true
py=/usr/bin/python3
export OMP_WAIT_POLICY=PASSIVE
nice -n 5 "$py" export.py --run "$run" "$@" --out ../models/denoise-emoji --fixture ../tests/fixtures/denoise-emoji
nice -n 5 "$py" eval.py score --model ../models/denoise-emoji --json results/eval.json \
  --sheet results/contact_sheet.png --seed-sheet results/seeds.png --history results/checkpoints.json
nice -n 5 "$py" results.py --run "$run"
