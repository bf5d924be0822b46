#!/usr/bin/env python3
"""ViT-B/16 with random weights for the peer comparisons (`../shared` has only ViT-Ti models):
an ONNX model (f32 and onnxruntime's dynamic int8) and the same weights as a Hugging Face
snapshot for edgevit, so that both engines run one network.

    python3 benches/make_vit_b_onnx.py OUTDIR                # needs onnx, onnxruntime, numpy
    VIT_B_ONNX=OUTDIR/model.int8.onnx benches/arm_cost.sh
    python3 benches/e2e_vs_onnxruntime.py --snapshot OUTDIR/vit-b16-random --onnx OUTDIR

No torch: the graph is `../shared`'s ViT-Ti export (torch.onnx, opset 17, set by
EDGEVIT_SHARED or --template) with every weight regrown to google/vit-base-patch16-224's
shape (hidden 192 -> 768, MLP 768 -> 3072, 3 -> 12 heads). Its reshapes name only the head
size (64, the same in both) and -1, so the nodes stay as torch wrote them and onnxruntime
fuses them the same way. Weights are drawn as transformers initialises a ViT (normal, std
0.02, cut at 2 std; biases 0; LayerNorm 1 and 0), seed 0. The int8 model is made as
`../shared`'s was: quantize_dynamic, per-channel QInt8 weights.

Writes OUTDIR/model.onnx, OUTDIR/model.int8.onnx and OUTDIR/vit-b16-random/ (config.json,
preprocessor_config.json, model.safetensors); then checks that onnxruntime's f32 logits and
edgevit's (target/release/edgevit, if built) agree on a random input.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_vs_onnxruntime import EDGEVIT, ROOT, TOOLS  # noqa: E402

SHARED = os.environ.get("EDGEVIT_SHARED", os.path.join(ROOT, "..", "shared"))
# The snapshot's config and preprocessing are the ViT-Ti's, with ViT-B's sizes.
VIT_TI = os.path.join(SHARED, "models", "vit-tiny-imagenet")
HIDDEN, MLP, HEADS = 768, 3072, 12
# ViT-Ti's sizes, as the template has them.
TI_HIDDEN, TI_MLP = 192, 768

# The template's module paths, as in its initializer and node names, and transformers'
# safetensors names for them (ViTForImageClassification).
HF_NAMES = {
    "attention/q_proj": "attention.attention.query",
    "attention/k_proj": "attention.attention.key",
    "attention/v_proj": "attention.attention.value",
    "attention/o_proj": "attention.output.dense",
    "mlp/fc1": "intermediate.dense",
    "mlp/fc2": "output.dense",
    "layernorm_before": "layernorm_before",
    "layernorm_after": "layernorm_after",
}


def hf_name(onnx_name):
    """The safetensors name of a named initializer of the template, e.g.
    vit.layers.3.attention.q_proj.bias -> vit.encoder.layer.3.attention.attention.query.bias."""
    m = re.fullmatch(r"vit\.layers\.(\d+)\.(.+)\.(weight|bias)", onnx_name)
    if not m:
        return onnx_name  # embeddings, the final LayerNorm and the classifier keep their names
    layer, module, kind = m.groups()
    return f"vit.encoder.layer.{layer}.{HF_NAMES[module.replace('.', '/')]}.{kind}"


def regrow(dims):
    """ViT-Ti's shape of a tensor as ViT-B's: the MLP size first (it is ViT-B's hidden size)."""
    return [MLP if d == TI_MLP else HIDDEN if d == TI_HIDDEN else d for d in dims]


def draw(rng, shape, kind):
    if kind == "ones":
        return np.ones(shape, np.float32)
    if kind == "zeros":
        return np.zeros(shape, np.float32)
    return np.clip(rng.standard_normal(shape) * 0.02, -0.04, 0.04).astype(np.float32)


def kind_of(hf):
    if "layernorm" in hf:
        return "ones" if hf.endswith("weight") else "zeros"
    if hf.endswith("bias"):
        return "zeros"
    return "normal"


def write_safetensors(path, tensors):
    header, offset = {}, 0
    for name, t in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for t in tensors.values():
            f.write(np.ascontiguousarray(t).tobytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder to write into")
    ap.add_argument("--template", default=os.path.join(SHARED, "models", "vit-tiny-imagenet-onnx", "model.onnx"), help="a ViT-Ti/16 f32 export to regrow (default: ../shared's)")
    args = ap.parse_args()
    if not os.path.isfile(args.template):
        sys.exit(f"make_vit_b_onnx: no template {args.template} (set EDGEVIT_SHARED or --template)")
    if not os.path.isfile(os.path.join(VIT_TI, "config.json")):
        sys.exit(f"make_vit_b_onnx: no {VIT_TI}/config.json to base the snapshot's on (set EDGEVIT_SHARED)")
    model = onnx.load(args.template)
    inits = {i.name: i for i in model.graph.initializer}
    cls = inits.get("vit.embeddings.cls_token")
    if cls is None or list(cls.dims) != [1, 1, TI_HIDDEN]:
        sys.exit(f"make_vit_b_onnx: {args.template} is not a ViT-Ti/16 export (hidden size {TI_HIDDEN}, as ../shared's)")
    # The MatMul weights are anonymous (onnx::MatMul_N, stored [in, out]); their node's name
    # says whose they are.
    matmul_of = {}
    for node in model.graph.node:
        m = re.fullmatch(r"/vit/layers\.(\d+)/(.+)/MatMul", node.name)
        if node.op_type == "MatMul" and m and node.input[1] in inits:
            matmul_of[node.input[1]] = f"vit.encoder.layer.{m.group(1)}.{HF_NAMES[m.group(2)]}.weight"

    rng = np.random.default_rng(0)
    tensors = {}
    for init in model.graph.initializer:
        dims = regrow(list(init.dims))
        if init.name in matmul_of:
            hf = matmul_of[init.name]
            w = draw(rng, dims[::-1], "normal")  # transformers stores [out, in]
            tensors[hf] = w
            value = w.T
        else:
            hf = hf_name(init.name)
            value = draw(rng, dims, kind_of(hf))
            tensors[hf] = value
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), init.name))
    # Shapes that onnx recorded for the intermediate values are ViT-Ti's: drop them.
    del model.graph.value_info[:]
    for v in list(model.graph.output):
        v.type.tensor_type.ClearField("shape")

    os.makedirs(args.out, exist_ok=True)
    f32, i8 = os.path.join(args.out, "model.onnx"), os.path.join(args.out, "model.int8.onnx")
    onnx.save(model, f32)
    quantize_dynamic(f32, i8, per_channel=True, weight_type=QuantType.QInt8)

    snap = os.path.join(args.out, "vit-b16-random")
    os.makedirs(snap, exist_ok=True)
    write_safetensors(os.path.join(snap, "model.safetensors"), dict(sorted(tensors.items())))
    with open(os.path.join(VIT_TI, "config.json")) as f:
        config = json.load(f)
    config.update(hidden_size=HIDDEN, intermediate_size=MLP, num_attention_heads=HEADS, pooler_output_size=HIDDEN)
    config["id2label"] = {str(i): f"class {i}" for i in range(1000)}
    config["label2id"] = {f"class {i}": i for i in range(1000)}
    with open(os.path.join(snap, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    with open(os.path.join(VIT_TI, "preprocessor_config.json")) as f, open(os.path.join(snap, "preprocessor_config.json"), "w") as g:
        g.write(f.read())
    print(f"wrote {f32}, {i8} and {snap}/")
    check(f32, snap)


def check(onnx_path, snap):
    """onnxruntime's f32 logits against edgevit's f32 on one random input: the two must be one
    network (a wrong name or transpose above would show here)."""
    if not (os.path.isfile(TOOLS) and os.path.isfile(EDGEVIT)):
        print("(not checked against edgevit: build it with `cargo build --release --workspace`)")
        return
    x = np.random.default_rng(1).standard_normal((3, 224, 224)).astype(np.float32)
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    ours = sess.run(None, {sess.get_inputs()[0].name: x[None]})[0][0]
    with tempfile.TemporaryDirectory() as tmp:
        ev, npy = os.path.join(tmp, "m.evit"), os.path.join(tmp, "x.npy")
        np.save(npy, x)
        subprocess.run([TOOLS, "quantize", snap, "--dtype", "f32", "-o", ev], check=True, capture_output=True)
        out = subprocess.run([EDGEVIT, "classify", "-m", ev, "--json", "--logits", "--top-k", "1", npy], check=True, capture_output=True, text=True).stdout
    theirs = np.array(json.loads(out.splitlines()[0])["logits"], np.float32)
    err = float(np.max(np.abs(ours - theirs)) / (np.max(ours) - np.min(ours)))
    same = int(np.argmax(ours)) == int(np.argmax(theirs))
    print(f"edgevit f32 against onnxruntime f32: max |difference| {err:.2e} of the logit range, top-1 {'same' if same else 'DIFFERENT'}")
    if err > 1e-3 or not same:
        sys.exit("make_vit_b_onnx: edgevit and onnxruntime disagree: the ONNX model is not the snapshot's network")


if __name__ == "__main__":
    main()
