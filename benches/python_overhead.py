#!/usr/bin/env python3
"""What the Python package costs over the binary, and whether Python threads scale.

    python3 -m venv /tmp/pyenv && /tmp/pyenv/bin/pip install ./python
    cargo build --release --workspace
    /tmp/pyenv/bin/python benches/python_overhead.py [--threads 1] [--runs 200] [--rounds 5]

Quantizes ../shared's ViT-Ti to int8 ($EDGEVIT_SHARED, or --model FILE), then in alternating
rounds times `edgevit bench --json` (the forward pass inside the binary, its p50) and
`Model.logits` on one preprocessed tensor from Python (the median call), with the same number
of threads, and prints the per-call overhead. `Model.classify` on a 640x480 RGB frame is timed
too (conversion and resize included). Then throughput with one and two Python threads, each
with its own one-thread model: with the GIL released, two threads do about twice the work on a
machine with two free cores.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import edgevit

REPO = Path(__file__).resolve().parents[1]


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed(f, runs, model=None):
    """Median ms per call, and (with `model`) the median of each call's time outside its
    forward pass (the call from Python, the hand-over to the model's threads and back)."""
    times, outside = [], []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
        if model is not None:
            outside.append(times[-1] - sum(model.last_timings().values()))
    return statistics.median(times), statistics.median(outside) if outside else None


def throughput(model_path, tensor, threads, seconds):
    """Calls per second with `threads` Python threads, each with its own one-thread model."""
    models = [edgevit.Model(model_path, threads=1) for _ in range(threads)]
    for m in models:
        m.logits(tensor)
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def work(i):
        start.wait()
        while time.perf_counter() < deadline[0]:
            models[i].logits(tensor)
            counts[i] += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    deadline[0] = time.perf_counter() + seconds
    start.wait()
    for w in workers:
        w.join()
    return sum(counts) / seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="an .evit file (default: ../shared's ViT-Ti quantized to int8)")
    ap.add_argument("--threads", type=int, default=1, help="threads for the overhead comparison (default 1)")
    ap.add_argument("--runs", type=int, default=200, help="timed calls per round (default 200)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    ap.add_argument("--seconds", type=float, default=5.0, help="per thread-scaling measurement (default 5)")
    args = ap.parse_args()
    bins = Path(os.environ.get("EDGEVIT_BIN", REPO / "target/release"))
    shared = Path(os.environ.get("EDGEVIT_SHARED", REPO.parent / "shared"))
    tmp = tempfile.TemporaryDirectory()
    model_path = args.model
    if model_path is None:
        model_path = os.path.join(tmp.name, "vit-tiny-int8.evit")
        subprocess.run(
            [bins / "edgevit-tools", "quantize", shared / "models/vit-tiny-imagenet", "--dtype", "int8", "-o", model_path],
            check=True,
            capture_output=True,
        )

    m = edgevit.Model(model_path, threads=args.threads)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    tensor = m.preprocess(frame)
    for _ in range(10):
        m.logits(tensor)

    cli, py, py_outside, py_classify = [], [], [], []
    for _ in range(args.rounds):
        out = subprocess.run(
            [bins / "edgevit", "bench", "-m", model_path, "--threads", str(args.threads), "--runs", str(args.runs),
             "--warmup", "10", "--json"],
            check=True,
            capture_output=True,
            text=True,
        )
        cli.append(json.loads(out.stdout)["p50_ms"])
        call, outside = timed(lambda: m.logits(tensor), args.runs, m)
        py.append(call)
        py_outside.append(outside)
        py_classify.append(timed(lambda: m.classify(frame), args.runs // 4 or 1)[0])
    cli_ms, py_ms, outside_ms, classify_ms = (statistics.median(v) for v in (cli, py, py_outside, py_classify))

    print(f"# {cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}; edgevit {edgevit.__version__}")
    print(f"# {Path(model_path).name} ({m.dtype}), {args.threads} thread(s), {args.rounds} rounds x {args.runs} calls")
    print()
    print("| call | median ms | vs edgevit bench |")
    print("|---|---|---|")
    print(f"| `edgevit bench` p50 (forward pass in the binary) | {cli_ms:.3f} | 1.000 |")
    print(f"| `Model.logits(tensor)` from Python | {py_ms:.3f} | {py_ms / cli_ms:.3f} |")
    print(f"| of which outside the forward pass (`Model.last_timings()`) | {outside_ms:.3f} | {outside_ms / cli_ms:.3f} |")
    print(f"| `Model.classify(640x480 RGB array)` from Python | {classify_ms:.3f} | {classify_ms / cli_ms:.3f} |")
    print()
    print(f"per-call overhead of Python at batch 1: {100 * (py_ms / cli_ms - 1):+.1f}% against the binary's p50 "
          f"(another process), {100 * outside_ms / (py_ms - outside_ms):.1f}% against the forward pass of the same "
          "calls (goal: at most 3%)")
    print()
    one = throughput(model_path, tensor, 1, args.seconds)
    two = throughput(model_path, tensor, 2, args.seconds)
    print("| Python threads (one 1-thread model each) | calls/s | scaling |")
    print("|---|---|---|")
    print(f"| 1 | {one:.1f} | 1.00x |")
    print(f"| 2 | {two:.1f} | {two / one:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
