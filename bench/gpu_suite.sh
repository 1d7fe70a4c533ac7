#!/usr/bin/env bash
# Every GPU measurement the issues ask for, in one run, for a session that is lent a GPU machine:
# kernel ladders, U-Net steps (SD 1.5 and SD 2.1, f16/f32, batch 1/2), loading a full-size SD 1.5
# checkpoint, LoRA merge vs on-the-fly at SD 1.5 size, and a 20-step 512² image end to end (random
# SD 1.5 weights, so the picture is noise).
# Results (text + JSON) go to $1, else $OUT, else out/gpu/. Copy the numbers into bench/RESULTS.md.
#
# On the device machine (after `bash ../shared/gpu/prepare.sh` here, carry .gpu):
#   source .gpu/env.sh; bash bench/gpu_suite.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-out/gpu}}"
mkdir -p "$out"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/denoise-xdg}"
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
status=0
run() { # name, command…
  local name=$1
  shift
  echo "== $name: $*"
  local t0=$SECONDS
  if "$@" >"$out/$name.txt" 2>&1; then
    echo "   ok in $((SECONDS - t0)) s"
  else
    echo "   FAILED (rc $?) in $((SECONDS - t0)) s: tail of $out/$name.txt"
    tail -5 "$out/$name.txt"
    status=1
  fi
}
deno eval 'const a = await navigator.gpu.requestAdapter(); console.log(JSON.stringify({ ...a?.info, date: new Date().toISOString() }))' |
  tee "$out/adapter.json"
run kernels deno run -A bench/kernels.ts --json "$out/kernels.json"
run unet_sd15_f16_b2 deno run -A bench/unet_step.ts --arch sd15 --json "$out/unet_sd15_f16_b2.json"
run unet_sd15_f16_b1 deno run -A bench/unet_step.ts --arch sd15 --batch 1 --json "$out/unet_sd15_f16_b1.json"
run unet_sd15_f32_b2 deno run -A bench/unet_step.ts --arch sd15 --dtype f32 --json "$out/unet_sd15_f32_b2.json"
run unet_sd21_768_b2 deno run -A bench/unet_step.ts --arch sd21 --json "$out/unet_sd21_768_b2.json"
run unet_turbo_512_b1 deno run -A bench/unet_step.ts --arch sd21 --base 512 --batch 1 --json "$out/unet_turbo_512_b1.json"
run lora_sd15 deno run -A bench/lora.ts --res 512 --json "$out/lora_sd15.json"
ckpt=/tmp/denoise-sd15-f16.safetensors
run make_checkpoint deno run -A bench/make_checkpoint.ts --out "$ckpt" --dtype f16 --family sd15
tok=tests/fixtures/models/tiny-sd15/tokenizer # any CLIP-format tokenizer serves for timing
run load_checkpoint deno run -A bench/load_checkpoint.ts --file "$ckpt" --dtype f16 --tokenizer "$tok" --json "$out/load_checkpoint.json"
run pipeline_512 deno run -A bench/pipeline.ts --model "$ckpt" --tokenizer "$tok" --res 512 --steps 20 --dtype f16 --json "$out/pipeline_512.json"
rm -f "$ckpt"
echo "results in $out"
exit "$status"
