#!/usr/bin/env bash
# What preparing one camera frame costs on a Raspberry Pi's cores, beside the inference: the
# instructions of `edgevit classify --stream` under qemu (../shared/armcount's insncount.so
# plugin), weighted per basic block by llvm-mca's model of the core, for SMALL and BIG frames
# of the same stream; (BIG - SMALL) / (BIG - SMALL frames) is one frame, and the symbols of the
# colour conversion and resize (edgevit::preprocess, edgevit::stream and the resampling and YUV
# kernels) are its preparation.
#
#   benches/arm_frame_cost.sh [--format nv12] [--size 640x480] [--cpu cortex-a76] [OUT_DIR]
#
# Model: a random-weight ViT-Ti/16 int8 (the preparation does not depend on the weights).
# Needs what benches/arm_cost.sh needs (qemu-aarch64, llvm-mca-19, the aarch64 target).
set -euo pipefail
cd "$(dirname "$0")/.."
format=nv12 size=640x480 cpu=cortex-a76
while [ $# -gt 0 ]; do
  case $1 in
    --format) format=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --cpu) cpu=$2; shift 2 ;;
    -*) echo "arm_frame_cost: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
shared=${EDGEVIT_SHARED:-$(cd .. && pwd)/shared}
armcount=$shared/armcount
out=${1:-${TMPDIR:-/tmp}/armcount/frames}
[ -f "$armcount/insncount.so" ] || { echo "arm_frame_cost: no $armcount/insncount.so (set EDGEVIT_SHARED)" >&2; exit 2; }
case $cpu in cortex-a72) model=cortex-a72 ghz=1.8 ;; *) model=neoverse-n1 ghz=2.4 ;; esac
mkdir -p "$out"

cargo build --release -p edgevit-tools >&2
cargo build --release --target aarch64-unknown-linux-gnu --bin edgevit >&2
bin=target/aarch64-unknown-linux-gnu/release/edgevit
target/release/edgevit-tools synth --arch vit-ti16 --dtype int8 -o "$out/vit-ti16-int8.evit" >/dev/null

small=2 big=4
w=${size%x*} h=${size#*x}
for n in $small $big; do
  python3 - "$format" "$w" "$h" "$n" > "$out/frames-$n.raw" <<'PY'
import sys
fmt, w, h, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
luma = bytes((x + 7 * y) % 256 for y in range(h) for x in range(w))
sizes = {"nv12": (w * h * 3) // 2, "yuv420p": (w * h * 3) // 2, "rgb24": w * h * 3, "bgr24": w * h * 3,
         "rgba": w * h * 4, "bgra": w * h * 4, "gray8": w * h}
for i in range(n):
    frame = (luma * 4)[: sizes[fmt]]
    sys.stdout.buffer.write(bytes((v + 3 * i) % 256 for v in frame))
PY
  qemu-aarch64 -cpu "$cpu" -L "${SYSROOT:-/usr/aarch64-linux-gnu}" \
    -plugin "$armcount/insncount.so,out=$out/stream-$cpu-r$n.tsv" \
    "$bin" classify -m "$out/vit-ti16-int8.evit" --threads 1 --stream --frame-format "$format" \
    --frame-size "$size" < "$out/frames-$n.raw" > "$out/stream-$cpu-r$n.json" 2> "$out/stream-$cpu-r$n.err"
done
echo "== one $size $format frame through classify --stream, ViT-Ti/16 int8, 1 thread, $cpu"
python3 "$armcount/mca_profile.py" "$out/stream-$cpu-r$big.tsv" "$out/stream-$cpu-r$small.tsv" $((big - small)) \
  $model --ghz $ghz --top 40 > "$out/stream-$cpu.txt" 2>/dev/null
head -2 "$out/stream-$cpu.txt"
python3 - "$out/stream-$cpu.txt" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
total = float(re.search(r"estimated ([\d.]+) M cycles", lines[0]).group(1))
prep = [(float(m.group(1)), m.group(2)) for l in lines[2:] if (m := re.match(r"\s*([\d.]+)% of cycles\s+(.*)", l))
        and re.search(r"edgevit::(preprocess|stream)|resample|resize|yuv|rgb_row", m.group(2))]
share = sum(p for p, _ in prep)
print(f"frame preparation: {share:.1f}% of the frame's cycles, about {total * share / 100:.1f} M cycles")
for p, name in prep:
    print(f"   {p:5.1f}%  {name}")
PY
