#!/usr/bin/env python3
"""Steady streaming throughput of `edgevit classify --stream` against `edgevit bench`'s
images/s, for the same model and thread count, in one run. Standard library only.

    cargo build --release --workspace
    python3 benches/stream_throughput.py [--arch vit-b16] [--dtype int8] [--threads 2]
        [--format nv12] [--size 640x480] [--frames 300]

It writes a random-weight model of the architecture with `edgevit-tools synth`, runs
`edgevit bench` on it, then feeds raw frames (a moving gradient, so consecutive frames differ)
from a file to `edgevit classify --stream` on stdin and times the JSON lines as they arrive. Throughput is taken
between the 10th and the last line, so process start and model open are not counted. Each
measurement is repeated (--repeats) and the medians are compared.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "target", "release", "edgevit-tools")
EDGEVIT = os.path.join(ROOT, "target", "release", "edgevit")
SKIP = 10


def frame_bytes(fmt, w, h, i):
    """One frame of a gradient shifted by i, in the given raw format."""
    row = bytes((x + 3 * i) % 256 for x in range(w))
    luma = b"".join(row[y % 7:] + row[: y % 7] for y in range(h))
    if fmt in ("nv12", "yuv420p"):
        chroma = bytes((128 + (i % 32)) for _ in range(2 * ((w + 1) // 2) * ((h + 1) // 2)))
        return luma + chroma
    if fmt == "rgb24":
        return bytes(b for v in luma for b in (v, 255 - v, (v * 3) % 256))
    if fmt == "gray8":
        return luma
    raise SystemExit(f"unsupported --format {fmt} for this script")


def stream_fps(model, fmt, size, frames, threads, tmp):
    w, h = map(int, size.split("x"))
    # The frames go to a file first and edgevit reads it as stdin, so that making and writing
    # them costs the measured run nothing (a camera process would run on its own hardware).
    data = [frame_bytes(fmt, w, h, i % 16) for i in range(16)]
    path = os.path.join(tmp, "frames.raw")
    with open(path, "wb") as f:
        for i in range(frames):
            f.write(data[i % 16])
    cmd = [EDGEVIT, "classify", "-m", model, "--stream", "--frame-format", fmt, "--frame-size", size,
           "--threads", str(threads), "--top-k", "1"]
    with open(path, "rb") as stdin:
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stamps, lines = [], []
        for line in proc.stdout:
            stamps.append(time.monotonic())
            lines.append(json.loads(line))
        proc.wait()
    if proc.returncode != 0 or len(lines) != frames:
        raise SystemExit(f"stream failed ({proc.returncode}, {len(lines)} lines): {proc.stderr.read().decode()}")
    fps = (len(stamps) - 1 - SKIP) / (stamps[-1] - stamps[SKIP])
    ms = {k: statistics.median(l["ms"][k] for l in lines[SKIP:]) for k in ("read", "preprocess", "inference")}
    return fps, ms


def bench_ips(model, runs, threads):
    out = subprocess.run([EDGEVIT, "bench", "-m", model, "--runs", str(runs), "--threads", str(threads), "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="vit-b16")
    ap.add_argument("--dtype", default="int8")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--format", default="nv12")
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "model.evit")
        subprocess.run([TOOLS, "synth", "--arch", args.arch, "--dtype", args.dtype, "-o", model], check=True,
                       capture_output=True)
        print(f"# {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, "
              f"{args.arch} {args.dtype}, {args.threads} threads, {args.format} {args.size}, "
              f"{args.frames} frames, {time.strftime('%Y-%m-%d')}")
        benches, streams = [], []
        for r in range(args.repeats):
            b = bench_ips(model, args.frames, args.threads)
            fps, ms = stream_fps(model, args.format, args.size, args.frames, args.threads, tmp)
            benches.append(b["images_per_s"])
            streams.append(fps)
            print(f"repeat {r}: bench {b['images_per_s']:.2f} images/s (p50 {b['p50_ms']:.2f} ms), "
                  f"stream {fps:.2f} frames/s (median ms: read {ms['read']:.2f}, preprocess "
                  f"{ms['preprocess']:.2f}, inference {ms['inference']:.2f})")
        b, s = statistics.median(benches), statistics.median(streams)
        print(f"median: bench {b:.2f} images/s, stream {s:.2f} frames/s, stream/bench = {s / b:.3f}")


if __name__ == "__main__":
    main()
