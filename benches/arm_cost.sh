#!/usr/bin/env bash
# What one inference costs on a Raspberry Pi's cores, edgevit next to ONNX Runtime and LiteRT with
# XNNPACK on the same network, without a Pi: ../shared/armcount counts every aarch64 instruction
# of an inference under qemu and weights each basic block by llvm-mca's model of the Cortex-A76
# (Pi 5) or Cortex-A72 (Pi 4). See ../shared/armcount/README.md for what the model leaves out
# (cache misses, four cores sharing an L3) and the one-time host setup.
#
#   benches/arm_cost.sh [--quick] [CACHE_DIR]
#
# Prints, one line per network, dtype and core: instructions, estimated cycles and ms, and the
# ratios to both peers (ViT-Ti/16 int8, f16 and f32 on both cores: f16 computes in half
# precision on the Cortex-A76, in f32 on widened weights on the A72; ViT-B/16 int8 on the
# Cortex-A76). Then edgevit's top symbols per
# run and its microkernels' inner loops (MACs per cycle, % of the core's peak,
# benches/mca_inner_loops.py).
#
# --quick: ViT-Ti int8 only. CACHE_DIR (default $TMPDIR/armcount) keeps the peers' counts.
# Peers: f16 runs are compared with the peers' f32 models (neither peer has an f16 one here).
# ViT-B/16: there is no ViT-B ONNX or .tflite model in ../shared, so edgevit is counted alone
# unless VIT_B_ONNX names an int8 ONNX model (benches/make_vit_b_onnx.py makes one); ONNX Runtime
# then runs it too (some ten minutes the first time; its counts are cached).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
if [ "${1:-}" = --quick ]; then quick=1; shift; fi
shared=${EDGEVIT_SHARED:-$(cd .. && pwd)/shared}
armcount=$shared/armcount
cache=${1:-${TMPDIR:-/tmp}/armcount}
[ -x "$armcount/estimate.sh" ] || { echo "arm_cost: no $armcount/estimate.sh (set EDGEVIT_SHARED)" >&2; exit 2; }
for tool in qemu-aarch64 llvm-mca-19 aarch64-linux-gnu-gcc; do
  command -v "$tool" >/dev/null || { echo "arm_cost: $tool is missing; see $armcount/README.md (Setup)" >&2; exit 2; }
done

cargo build --release --target aarch64-unknown-linux-gnu --bin edgevit >&2
bin=target/aarch64-unknown-linux-gnu/release/edgevit
mkdir -p "$cache/out"

estimate() { # ARCH DTYPE "CPUS"
  echo "== $1 $2 (1 thread)"
  ARCH=$1 DTYPE=$2 CPUS="$3" "$armcount/estimate.sh" "$bin" "$cache"
}

estimate vit-ti16 int8 "cortex-a76 cortex-a72"
if [ $quick = 0 ]; then
  estimate vit-ti16 f16 "cortex-a76 cortex-a72"
  estimate vit-ti16 f32 "cortex-a76 cortex-a72"
  echo "== vit-b16 int8 (1 thread, cortex-a76)"
  "$armcount/count_edgevit.sh" "$bin" cortex-a76 vit-b16 int8 "$cache/out" 1 2 >/dev/null
  e=$cache/out/edgevit-vit-b16-int8-cortex-a76
  # (not piped into head: with pipefail, the closed pipe would end the script)
  ec=$(python3 "$armcount/mca_profile.py" "$e-r2.tsv" "$e-r1.tsv" 1 neoverse-n1 --ghz 2.4 --top 0 2>/dev/null | grep "^==")
  if [ -n "${VIT_B_ONNX:-}" ]; then
    # ONNX Runtime alone: there is no ViT-B .tflite for XNNPACK.
    key=$(basename "$(dirname "$VIT_B_ONNX")")-$(basename "$VIT_B_ONNX" .onnx)
    o=$cache/out/ort-$key-cortex-a76
    macs=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['gops_per_inference']*1e9/2)" "$e-r2.json")
    [ -f "$o-r3.tsv" ] || "$armcount/count_ort.sh" "${ORT_ROOT:-$cache/arm64root}" cortex-a76 "$VIT_B_ONNX" "$key" "$macs" "$cache/out" >/dev/null
    oc=$(python3 "$armcount/mca_profile.py" "$o-r3.tsv" "$o-r1.tsv" 2 neoverse-n1 --ghz 2.4 --top 0 2>/dev/null | grep "^==")
    python3 - "$ec" "$oc" <<'PY'
import re, sys
(ei, ec), (oi, oc) = [tuple(float(re.search(p, s).group(1)) for p in (r"([0-9.]+) M insns", r"estimated ([0-9.]+) M cycles"))
                      for s in sys.argv[1:]]
print(f"cortex-a76: edgevit {ei:.1f} M insns, {ec:.1f} M cycles ({ec / 2.4:.1f} ms at 2.4 GHz) | "
      f"onnxruntime {oi:.1f} M insns, {oc:.1f} M cycles | edgevit/onnxruntime {ec / oc:.2f}")
PY
  else
    echo "$ec"
    echo "(no ONNX Runtime figure: set VIT_B_ONNX, see benches/make_vit_b_onnx.py)"
  fi
fi

echo
echo "== where edgevit's cycles go"
for run in "$cache"/out/edgevit-*-r3.tsv; do
  case $run in *-cortex-a72-*) model=cortex-a72 ghz=1.8 ;; *) model=neoverse-n1 ghz=2.4 ;; esac
  python3 "$armcount/mca_profile.py" "$run" "${run%-r3.tsv}-r1.tsv" 2 $model --ghz $ghz --top 10 2>/dev/null
done

echo
echo "== microkernel inner loops"
python3 benches/mca_inner_loops.py "$bin" "$armcount"
