#!/usr/bin/env python3
"""ViT-B/16 in ONNX for the peers of benches/arm_cost.sh (`../shared` has only ViT-Ti models):
random weights in google/vit-base-patch16-224's shape, exported and quantized exactly as
benches/e2e_vs_onnxruntime.py does (torch.onnx opset 17, then onnxruntime's quantize_dynamic
with per-channel QInt8 weights, as `../shared`'s ViT-Ti int8 model was made).

    /tmp/bench/bin/python benches/make_vit_b_onnx.py OUTDIR
    VIT_B_ONNX=OUTDIR/model.int8.onnx benches/arm_cost.sh

Writes OUTDIR/model.onnx (f32) and OUTDIR/model.int8.onnx. Needs the Python environment of
e2e_vs_onnxruntime.py (torch, transformers, onnx, onnxscript, onnxruntime).
"""
import os
import sys
import tempfile

from onnxruntime.quantization import QuantType, quantize_dynamic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_vs_onnxruntime import export_onnx, make_snapshot  # noqa: E402


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = make_snapshot(tmp)
    f32, i8 = os.path.join(out, "model.onnx"), os.path.join(out, "model.int8.onnx")
    export_onnx(model, f32)
    quantize_dynamic(f32, i8, per_channel=True, weight_type=QuantType.QInt8)
    print(f"wrote {f32} and {i8}")


if __name__ == "__main__":
    main()
