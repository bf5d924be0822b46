#!/usr/bin/env bash
# Estimated speedup of one int8 inference at T threads on a Pi core model, from per-thread
# instruction counts under qemu (../shared/armcount: count_threads.sh + thread_balance.py; read
# its README for what the estimate means and why T must not exceed the host's free cores).
#
#   benches/arm_threads.sh [ARCH] [T] [CPU]      # defaults: vit-ti16 2 cortex-a76
#
# count_threads.sh runs ViT-Ti; for another ARCH this runs a copy of the tool directory with
# the architecture substituted. ViT-B takes some ten minutes per thread count.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-vit-ti16} threads=${2:-2} cpu=${3:-cortex-a76}
# Inferences in the two counted runs (1 and big); their difference is what is measured.
big=$([ "$arch" = vit-ti16 ] && echo 3 || echo 2)
shared=${EDGEVIT_SHARED:-$(cd .. && pwd)/shared}
[ -x "$shared/armcount/count_threads.sh" ] || { echo "arm_threads: no $shared/armcount/count_threads.sh (set EDGEVIT_SHARED)" >&2; exit 2; }
cargo build --release --target aarch64-unknown-linux-gnu --bin edgevit >&2
bin=$PWD/target/aarch64-unknown-linux-gnu/release/edgevit
tools=$(mktemp -d) out=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
cp -r "$shared/armcount/." "$tools"
sed -i "s/--arch vit-ti16/--arch $arch/" "$tools/count_threads.sh"
for t in 1 "$threads"; do
  "$tools/count_threads.sh" edgevit "$bin" "$cpu" "$t" "$out" 1 "$big" >/dev/null
done
python3 "$tools/thread_balance.py" "$out/edgevit-$cpu-t1" "$out/edgevit-$cpu-t$threads" --small 1 --big "$big" --quiet
echo "(counts kept in $out)"
