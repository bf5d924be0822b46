#!/usr/bin/env python3
"""End-to-end latency of edgevit against onnxruntime at batch 1, in one run: ViT-B/16 with random
weights, or any Hugging Face ViT snapshot (`--snapshot ../shared/models/vit-tiny-imagenet`).

Needs Python with torch, transformers, onnx, onnxscript and onnxruntime (not needed by CI):

    python3 -m venv /tmp/bench && /tmp/bench/bin/pip install torch transformers onnx onnxscript onnxruntime
    cargo build --release --workspace
    /tmp/bench/bin/python benches/e2e_vs_onnxruntime.py [--threads 1 2] [--runs 20] [--snapshot DIR]

With a snapshot and its ONNX exports already made (`--onnx DIR`: DIR/model.onnx and
DIR/model.int8.onnx), only onnxruntime and numpy are needed:

    python3 -m venv /tmp/ort && /tmp/ort/bin/pip install onnxruntime numpy
    /tmp/ort/bin/python benches/e2e_vs_onnxruntime.py --snapshot ../shared/models/vit-tiny-imagenet \
        --onnx ../shared/models/vit-tiny-imagenet-onnx --runs 40

ViT-B/16 the same way, without torch (benches/make_vit_b_onnx.py needs onnx as well):

    /tmp/ort/bin/pip install onnx && /tmp/ort/bin/python benches/make_vit_b_onnx.py /tmp/vitb
    /tmp/ort/bin/python benches/e2e_vs_onnxruntime.py --snapshot /tmp/vitb/vit-b16-random --onnx /tmp/vitb

It makes a ViT-B/16 Hugging Face snapshot with random weights (google/vit-base-patch16-224's
shape), exports it to ONNX, quantizes that with onnxruntime's quantize_dynamic (per-channel
int8, QInt8 weights) and the snapshot with edgevit-tools (f32 and int8), then times every
engine/dtype/thread count on the same inputs and prints median latency, the ratio
edgevit / onnxruntime, and each engine's top-1 agreement with its own f32.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time

import numpy as np
import onnxruntime as ort

# torch, transformers and onnxruntime.quantization are imported where they are used: --onnx
# runs without them.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "target", "release", "edgevit-tools")
EDGEVIT = os.path.join(ROOT, "target", "release", "edgevit")


def make_snapshot(dirname):
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig()  # the ViT-B/16 224 defaults: hidden 768, 12 layers, 12 heads, MLP 3072
    config.num_labels = 1000
    config.id2label = {i: f"class {i}" for i in range(1000)}
    config.label2id = {v: k for k, v in config.id2label.items()}
    model = ViTForImageClassification(config).eval()
    model.save_pretrained(dirname, safe_serialization=True)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(dirname)
    return model


def export_onnx(model, path):
    import torch

    size = model.config.image_size
    dummy = torch.zeros(1, 3, size, size)
    torch.onnx.export(model, (dummy,), path, input_names=["pixel_values"], output_names=["logits"], opset_version=17, dynamo=True, external_data=False)


def time_ort(path, inputs, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    sess.run(None, {name: inputs[0][None]})  # warm-up
    times, tops = [], []
    for x in inputs:
        t = time.perf_counter()
        logits = sess.run(None, {name: x[None]})[0][0]
        times.append((time.perf_counter() - t) * 1e3)
        tops.append(int(np.argmax(logits)))
    return statistics.median(times), tops


def time_edgevit(model, npys, threads):
    # The first input is repeated as a warm-up and dropped; `ms` is measured inside the
    # process per input (reading the .npy and the forward pass).
    out = subprocess.run([EDGEVIT, "classify", "-m", model, "--json", "--top-k", "1", "--threads", str(threads), npys[0]] + npys, check=True, capture_output=True, text=True).stdout
    lines = [json.loads(l) for l in out.splitlines()][1:]
    return statistics.median(l["ms"] for l in lines), [l["top"][0]["index"] for l in lines]


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--snapshot", help="a Hugging Face ViT snapshot folder (default: ViT-B/16 with random weights)")
    ap.add_argument("--onnx", help="with --snapshot: a folder with its ONNX exports, model.onnx and model.int8.onnx (default: export and quantize them here)")
    args = ap.parse_args()
    if args.onnx and not args.snapshot:
        ap.error("--onnx needs --snapshot (the same network for edgevit)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.onnx:
            snap, name = args.snapshot, os.path.basename(os.path.normpath(args.snapshot))
            with open(os.path.join(snap, "config.json")) as f:
                size = json.load(f).get("image_size", 224)
            onnx_f32, onnx_i8 = os.path.join(args.onnx, "model.onnx"), os.path.join(args.onnx, "model.int8.onnx")
            for p in (onnx_f32, onnx_i8):
                if not os.path.isfile(p):
                    ap.error(f"--onnx: no {p}")
        else:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            if args.snapshot:
                from transformers import ViTForImageClassification

                snap, name = args.snapshot, os.path.basename(os.path.normpath(args.snapshot))
                model = ViTForImageClassification.from_pretrained(snap).eval()
            else:
                snap, name = os.path.join(tmp, "vit-b16"), "ViT-B/16 (random weights)"
                model = make_snapshot(snap)
            size = model.config.image_size
            onnx_f32 = os.path.join(tmp, "model.onnx")
            onnx_i8 = os.path.join(tmp, "model.int8.onnx")
            export_onnx(model, onnx_f32)
            quantize_dynamic(onnx_f32, onnx_i8, per_channel=True, weight_type=QuantType.QInt8)
        ev = {}
        for dtype in ["f32", "int8"]:
            ev[dtype] = os.path.join(tmp, f"model.{dtype}.evit")
            subprocess.run([TOOLS, "quantize", snap, "--dtype", dtype, "-o", ev[dtype]], check=True)
        rng = np.random.default_rng(0)
        inputs = [rng.standard_normal((3, size, size)).astype(np.float32) for _ in range(args.runs)]
        npys = []
        for i, x in enumerate(inputs):
            p = os.path.join(tmp, f"in{i}.npy")
            np.save(p, x)
            npys.append(p)

        print(f"{name}, batch 1, {args.runs} inputs, medians; {cpu_name()}, {os.cpu_count()} cores, onnxruntime {ort.__version__}")
        print(f"{'dtype':<6} {'threads':>7} {'edgevit ms':>11} {'onnxruntime ms':>15} {'ratio':>7}")
        tops = {}
        for dtype, onnx_path in [("f32", onnx_f32), ("int8", onnx_i8)]:
            for t in args.threads:
                e_ms, e_top = time_edgevit(ev[dtype], npys, t)
                o_ms, o_top = time_ort(onnx_path, inputs, t)
                tops[(dtype, "edgevit")], tops[(dtype, "ort")] = e_top, o_top
                print(f"{dtype:<6} {t:>7} {e_ms:>11.1f} {o_ms:>15.1f} {e_ms / o_ms:>6.2f}x")
        for engine in ["edgevit", "ort"]:
            same = sum(a == b for a, b in zip(tops[("f32", engine)], tops[("int8", engine)]))
            print(f"{engine}: int8 top-1 agrees with its own f32 on {same}/{args.runs} random inputs")


if __name__ == "__main__":
    main()
