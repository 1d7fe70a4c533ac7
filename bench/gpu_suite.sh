#!/usr/bin/env bash
# Every GPU measurement issue 14 asks for, in one command, for a session that is lent a GPU machine
# (15 device-minutes in all, starts included: the suite stops itself after SUITE_LIMIT_S = 420 s):
#   1. the adapter Deno's WebGPU sees (name, features incl. shader-f16 / subgroups, limits);
#   2. the U-Net step, SD 1.5 512² CFG (batch 2) f16, with the host-side ladder, beside PyTorch's
#      diffusers U-Net and VAE decoder on the same GPU (../shared/gpu/peer/torch_peer.py);
#   3. a 20-step 512² image end to end (a synthetic full-size SD 1.5 checkpoint, so the picture is
#      noise): steps synced, then free runs (host and GPU overlapping), VAE decode, peak memory;
#   4. the U-Net step, SD 2.1 768² CFG f16, beside PyTorch;
#   5. the side-by-side table (bench/gpu_summary.ts);
#   then, while time is left: loading the checkpoint, batch 1, SD-Turbo 512², f32, the kernel
#   ladders. Peak memory is also sampled from nvidia-smi every 0.5 s (the driver's view).
# Each command runs under `timeout` within what is left, so the suite ends in time with what
# finished. Everything is packed into $OUT/gpu_suite.tar.gz beside $OUT/summary.txt (the device
# tool returns few files).
#
#   here:        bash bench/gpu_prepare.sh         (.gpu/: deno, Vulkan loader, npm cache, the peer)
#   on the GPU:  source .gpu/env.sh; bash bench/gpu_suite.sh     (device tool: carry [".gpu"])
#   check it:    bash bench/gpu_suite.sh --quick /tmp/suite       (tiny sizes, any adapter)
#
# --quick (or --tiny) runs every step at tiny sizes (the tiny models, 64², 1-2 steps) to check the
# script end to end on the software adapter. Results go to the last argument, else $OUT, else
# out/gpu/. If Deno sees only a software adapter in a full run, the denoise steps are skipped (the
# Vulkan driver was not found: the suite records what the loader saw) and the peer still runs.
set -uo pipefail
cd "$(dirname "$0")/.."
quick=0
case "${1:-}" in --quick | --tiny) quick=1 && shift ;; esac
out="${1:-${OUT:-out/gpu}}"
if [ "$quick" = 1 ]; then limit=${SUITE_LIMIT_S:-1500}; else limit=${SUITE_LIMIT_S:-420}; fi
work="$out/gpu_suite"
mkdir -p "$work"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/denoise-xdg}"
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
export NO_COLOR=1 DENO_WEBGPU_BACKEND="${DENO_WEBGPU_BACKEND:-vulkan}"
summary="$out/summary.txt"
# with .gpu/ (env.sh), deno reads the pruned cache of gpu_prepare.sh only, never the network
deno_run=(deno run -A)
case "${DENO_DIR:-}" in */.gpu/deno_dir) deno_run+=(--no-lock --cached-only) ;; esac
: >"$summary"
status=0
start=$SECONDS
say() { echo "$*" | tee -a "$summary"; }

# GPU memory as the driver sees it, every 0.5 s, for the peak of each step
mem="$work/gpu_memory.txt"
sampler=""
if command -v nvidia-smi >/dev/null; then
  while :; do
    echo "$(date +%s.%N) $(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)"
    sleep 0.5
  done >"$mem" 2>/dev/null &
  sampler=$!
fi
peak_mib() { # from, to (epoch seconds): the largest sample in between
  [ -s "$mem" ] && awk -v a="$1" -v b="$2" '$1 >= a && $1 <= b && $2 > m { m = $2 } END { if (m) print m }' "$mem"
}

run() { # name, cap seconds, command…: output to $work/name.txt, appended to the summary
  local name=$1 cap=$2
  shift 2
  local left=$((limit - (SECONDS - start)))
  if ((left < 20)); then
    say "== $name: skipped (the suite's ${limit} s are spent)"
    return 1
  fi
  ((cap > left)) && cap=$left
  say "== $name (≤ ${cap} s): $*"
  local t0=$SECONDS e0 rc=0
  e0=$(date +%s.%N)
  timeout --kill-after=5 "$cap" "$@" >"$work/$name.txt" 2>&1 || rc=$?
  local peak
  peak=$(peak_mib "$e0" "$(date +%s.%N)")
  if ((rc == 0)); then
    say "   ok in $((SECONDS - t0)) s${peak:+; GPU memory peak ${peak} MiB (nvidia-smi)}"
  else
    ((rc == 124 || rc == 137)) && say "   TIMED OUT after $((SECONDS - t0)) s" ||
      say "   FAILED (rc $rc) in $((SECONDS - t0)) s"
    status=1
  fi
  grep -v '^Warning\|^    at ' "$work/$name.txt" | sed 's/^/   | /' >>"$summary"
  return "$rc"
}

# The PyTorch peer: diffusers' own U-Net and VAE decoder (packed by gpu_prepare.sh, or ../shared)
peer=""
if [ -f .gpu/peer.tar.xz ]; then
  mkdir -p /tmp/denoise-peer && tar -C /tmp/denoise-peer -xJf .gpu/peer.tar.xz &&
    peer=/tmp/denoise-peer/peer
elif [ -d ../shared/gpu/peer ]; then
  peer=../shared/gpu/peer
fi
python=""
for p in python3 /usr/bin/python3; do
  if "$p" -c "import torch" >/dev/null 2>&1; then python=$p && break; fi
done
torch_peer() { # name, cap, torch_peer.py flags…
  local name=$1 cap=$2
  shift 2
  if [ -z "$peer" ] || [ -z "$python" ]; then
    say "== $name: skipped (no python3 with torch, or no peer: run bench/gpu_prepare.sh)"
    return
  fi
  run "$name" "$cap" env PYTHONPATH="$peer/diffusers/src:$peer/hub/src" \
    "$python" "$peer/torch_peer.py" "$@" --json "$work/$name.json"
}
unet() { # name, cap, unet_step.ts flags…
  local name=$1 cap=$2
  shift 2
  run "$name" "$cap" "${deno_run[@]}" bench/unet_step.ts "$@" --json "$work/$name.json"
}

say "gpu_suite $(date -u +%FT%TZ) quick=$quick limit=${limit}s commit $(git rev-parse --short HEAD 2>/dev/null)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$work/nvidia_smi.txt" 2>&1 &&
  sed 's/^/   /' "$work/nvidia_smi.txt" | tee -a "$summary"
run adapter 60 "${deno_run[@]}" bench/gpu_adapter.ts --json "$work/adapter.json"
software=0
grep -qi 'llvmpipe\|swiftshader\|lavapipe\|"isFallback": true' "$work/adapter.json" 2>/dev/null &&
  software=1
if [ "$quick" = 0 ] && [ "$software" = 1 ]; then
  say "== Deno sees a software adapter: the NVIDIA Vulkan driver was not found; denoise steps skipped"
  {
    ls -l /usr/local/nvidia/share/vulkan/icd.d /usr/share/vulkan/icd.d /etc/vulkan/icd.d
    ldconfig -p | grep -i 'vulkan\|nvidia'
    env | grep -i 'vk_\|egl\|deno'
  } >"$work/vulkan_diagnostics.txt" 2>&1
  sed 's/^/   | /' "$work/vulkan_diagnostics.txt" >>"$summary"
  torch_peer peer_sd15 150 --arch sd15 --res 512 --dtype fp16 --batch 2
  torch_peer peer_sd21 150 --arch sd21 --res 768 --dtype fp16 --batch 2
elif [ "$quick" = 1 ]; then
  t=(--arch tiny --res 64 --steps 2 --warmup 1)
  sd2=../shared/fixtures/models/tiny-sd2 # tests/fixtures holds only its tokenizer
  unet unet_sd15_f16_b2 300 "${t[@]}" --compare ladder --rounds 2
  torch_peer peer_sd15 120 --arch tiny --res 64 --dtype fp32 --iters 2
  say "== make_checkpoint: not in --quick (it writes a full-size 2.1 GB checkpoint)"
  run pipeline_512 300 "${deno_run[@]}" bench/pipeline.ts --res 64 --steps 2 --runs 1 --free-runs 1 \
    --json "$work/pipeline_512.json"
  if [ -d "$sd2" ]; then
    unet unet_sd21_768_b2 300 --checkpoint "$sd2" --res 64 --steps 1 --warmup 1
  else
    say "== unet_sd21_768_b2: skipped ($sd2 is missing)"
  fi
  torch_peer peer_sd21 120 --arch tiny --res 64 --dtype fp32 --iters 2 --no-vae
  run summary 60 "${deno_run[@]}" bench/gpu_summary.ts "$work"
  tiny=tests/fixtures/models/tiny-sd15
  run load_checkpoint 120 "${deno_run[@]}" bench/load_checkpoint.ts --file "$tiny" --dtype f32 \
    --tokenizer "$tiny/tokenizer" --json "$work/load_checkpoint.json"
  unet unet_sd15_f16_b1 300 "${t[@]}" --batch 1
  [ -d "$sd2" ] && unet unet_turbo_512_b1 300 --checkpoint "$sd2" --res 64 --batch 1 --steps 1 --warmup 0
  unet unet_sd15_f32_b2 300 "${t[@]}" --dtype f32
  run kernels 300 "${deno_run[@]}" bench/kernels.ts --quick --only attention --json "$work/kernels.json"
else
  ckpt=/tmp/denoise-sd15-f16.safetensors
  tok=tests/fixtures/models/tiny-sd15/tokenizer # any CLIP-format tokenizer serves for timing
  unet unet_sd15_f16_b2 120 --arch sd15 --compare ladder --rounds 5
  torch_peer peer_sd15 120 --arch sd15 --res 512 --dtype fp16 --batch 2
  if run make_checkpoint 150 "${deno_run[@]}" bench/make_checkpoint.ts --out "$ckpt" --dtype f16 \
    --family sd15; then
    run pipeline_512 120 "${deno_run[@]}" bench/pipeline.ts --model "$ckpt" --tokenizer "$tok" \
      --res 512 --steps 20 --dtype f16 --runs 2 --free-runs 2 --json "$work/pipeline_512.json"
  fi
  unet unet_sd21_768_b2 120 --arch sd21
  torch_peer peer_sd21 120 --arch sd21 --res 768 --dtype fp16 --batch 2
  run summary 30 "${deno_run[@]}" bench/gpu_summary.ts "$work"
  [ -f "$ckpt" ] && run load_checkpoint 60 "${deno_run[@]}" bench/load_checkpoint.ts --file "$ckpt" \
    --dtype f16 --tokenizer "$tok" --json "$work/load_checkpoint.json"
  rm -f "$ckpt"
  unet unet_sd15_f16_b1 60 --arch sd15 --batch 1
  unet unet_turbo_512_b1 60 --arch sd21 --base 512 --batch 1
  unet unet_sd15_f32_b2 60 --arch sd15 --dtype f32
  run kernels 300 "${deno_run[@]}" bench/kernels.ts --json "$work/kernels.json"
fi
[ -n "$sampler" ] && kill "$sampler" 2>/dev/null
say "total $((SECONDS - start)) s; status $status"
tar -C "$out" -czf "$out/gpu_suite.tar.gz" gpu_suite && rm -rf "$work"
echo "results: $out/summary.txt, $out/gpu_suite.tar.gz"
exit "$status"
