#!/usr/bin/env bash
# Prepares .gpu/ for bench/gpu_suite.sh on a GPU machine that has no package registry, small enough
# to travel with the working tree (the device tool carries at most 64 MiB in all):
#   .gpu/deno.xz          the Deno binary, xz-compressed (~30 MB)
#   .gpu/debs/*.deb       the Vulkan and EGL loaders (the NVIDIA driver is on the machine)
#   .gpu/deno_dir/        a DENO_DIR with only the npm packages the benchmarks import
#   .gpu/peer.tar.xz      ../shared/gpu/peer (diffusers + huggingface_hub sources, torch_peer.py)
#   .gpu/env.sh           sourced first on the GPU machine (from ../shared/gpu/env.sh)
# Works in a git worktree too. Then, with the device tool:
#   run(command="source .gpu/env.sh; bash bench/gpu_suite.sh", carry=[".gpu"], timeout_s=600)
# usage (from the project root): bash bench/gpu_prepare.sh
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
shared=${SHARED:-$root/../shared}
git check-ignore -q .gpu || { echo "gpu_prepare: .gpu/ must be git-ignored" >&2; exit 1; }
mkdir -p .gpu/debs
deno_bin=$(command -v deno) || { echo "gpu_prepare: deno not on PATH: npm install -g deno@2.9.6" >&2; exit 1; }
deno_bin=$(readlink -f "$deno_bin")
if ! file "$deno_bin" | grep -q ELF; then # npm's deno wrapper is a script: take the binary beside it
  deno_bin=$(find "$(npm root -g)/deno" "$(npm root -g)/@deno" -name deno -type f -perm -u+x 2>/dev/null |
    xargs -r file | grep ELF | head -1 | cut -d: -f1)
fi
[ -f .gpu/deno.xz ] || xz -T0 -9e -c "$deno_bin" >.gpu/deno.xz # -9e: 1 MB less than -6
if [ -z "$(ls .gpu/debs/*.deb 2>/dev/null)" ]; then
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64-lists'
  mkdir -p /tmp/amd64-lists/partial
  apt-get $o update -qq
  (cd .gpu/debs && apt-get $o download libvulkan1 libegl1 libglvnd0 >/dev/null)
fi
# the npm cache of what the benchmarks import
rm -rf .gpu/deno_dir
DENO_DIR=$root/.gpu/deno_dir deno cache bench/kernels.ts bench/unet_step.ts bench/pipeline.ts \
  bench/load_checkpoint.ts bench/make_checkpoint.ts bench/gpu_adapter.ts bench/gpu_summary.ts >/dev/null
# `deno cache` fetches every npm package of the lockfile (the notebooks' d3, linkedom…): keep only
# the engine's runtime imports of deno.json; gpu_suite.sh runs deno with --no-lock --cached-only
# against it (with the lockfile, deno would install every package of it first)
keep=$(deno eval --no-config 'const c = JSON.parse(Deno.readTextFileSync("deno.json"));
console.log(Object.values(c.imports).filter((v) => v.startsWith("npm:") && !v.startsWith("npm:@types/"))
  .map((v) => v.slice(4).replace(/@[^@/]*$/, "")).join("\n"))')
npm=.gpu/deno_dir/npm/registry.npmjs.org
for d in "$npm"/* "$npm"/@*/*; do
  [ -d "$d" ] || continue
  name=${d#"$npm"/}
  case "$name" in @*/*) ;; @*) continue ;; esac
  grep -qxF "$name" <<<"$keep" || rm -rf "$d"
done
find "$npm" -mindepth 1 -maxdepth 1 -name '@*' -type d -empty -delete
offline() { DENO_DIR=$root/.gpu/deno_dir deno run --no-lock --cached-only -A "$@" 2>&1; }
# every module and npm package the benchmarks import loads from .gpu/deno_dir alone
loaded=$( (offline bench/unet_step.ts --help; offline bench/pipeline.ts --runs 0) || true)
grep -q 'U-Net step benchmark' <<<"$loaded" && grep -q 'runs must be' <<<"$loaded" ||
  { echo "gpu_prepare: the benchmarks do not load from .gpu/deno_dir alone" >&2; exit 1; }
rm -rf .gpu/deno_dir/check_cache* .gpu/deno_dir/*_cache_v2* .gpu/deno_dir/gen # rebuilt on demand
if [ -d "$shared/gpu/peer" ]; then
  tar -C "$shared/gpu" -cJf .gpu/peer.tar.xz peer
else
  echo "gpu_prepare: $shared/gpu/peer is missing: the PyTorch peer will be skipped" >&2
fi
cp "$shared/gpu/env.sh" .gpu/env.sh
tree=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
gpu=$(du -sb .gpu | cut -f1)
echo "gpu_prepare: .gpu $((gpu / 1048576)) MiB + tracked files $((tree / 1048576)) MiB (limit 64 MiB)"
du -sh .gpu/* | sed 's/^/  /'
if [ $((gpu + tree)) -gt $((64 * 1048576)) ]; then
  echo "gpu_prepare: over the device tool's 64 MiB" >&2
  exit 1
fi
