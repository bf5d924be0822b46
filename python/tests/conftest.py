"""Fixtures: the shared reference model quantized by edgevit-tools, and the CLI to compare with.

EDGEVIT_SHARED: the folder with models/, images/ and reference/ (default: ../shared beside the
repository). EDGEVIT_BIN: the folder with the release binaries (default: target/release,
built here if missing).
"""

import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def shared() -> Path:
    path = Path(os.environ.get("EDGEVIT_SHARED", REPO.parent / "shared"))
    if not (path / "DESIGN.md").is_file():
        raise RuntimeError(f"no shared data at {path}: set EDGEVIT_SHARED to the folder with models/ and images/")
    return path


@pytest.fixture(scope="session")
def bins() -> Path:
    path = Path(os.environ.get("EDGEVIT_BIN", REPO / "target" / "release"))
    if not (path / "edgevit").is_file() or not (path / "edgevit-tools").is_file():
        subprocess.run(["cargo", "build", "--release", "--workspace", "--quiet"], cwd=REPO, check=True)
    return path


class Cli:
    """The `edgevit` binary, run with --threads 2 as the models below."""

    def __init__(self, bins: Path):
        self.edgevit = str(bins / "edgevit")
        self.tools = str(bins / "edgevit-tools")

    def run(self, *args, input=None):
        out = subprocess.run([self.edgevit, *map(str, args)], input=input, capture_output=True)
        assert out.returncode == 0, out.stderr.decode()
        return out.stdout.decode()

    def json_lines(self, *args, input=None):
        return [json.loads(line) for line in self.run(*args, input=input).splitlines()]


@pytest.fixture(scope="session")
def cli(bins) -> Cli:
    return Cli(bins)


THREADS = 2


@pytest.fixture(scope="session")
def model_files(tmp_path_factory, shared, cli):
    """{"int8": path, "f32": path}: the shared ViT-Ti quantized as a user would."""
    out = tmp_path_factory.mktemp("models")
    files = {}
    for dtype in ("int8", "f32"):
        files[dtype] = out / f"vit-tiny-{dtype}.evit"
        subprocess.run(
            [cli.tools, "quantize", str(shared / "models/vit-tiny-imagenet"), "--dtype", dtype, "-o", str(files[dtype])],
            check=True,
            capture_output=True,
        )
    return files


def load_safetensors(path: Path) -> dict:
    """float32 tensors from a .safetensors file (header length, JSON header, data)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        assert meta["dtype"] == "F32", name
        start, end = meta["data_offsets"]
        tensors[name] = np.frombuffer(data[start:end], dtype="<f4").reshape(meta["shape"])
    return tensors


@pytest.fixture(scope="session")
def reference(shared):
    """[(image name, pixel_values [3,224,224], transformers' logits [1000])], sorted by name."""
    t = load_safetensors(shared / "reference/vit-tiny-imagenet.safetensors")
    names = sorted(k[len("logits/") :] for k in t if k.startswith("logits/"))
    return [(n, t[f"pixel_values/{n}"], t[f"logits/{n}"]) for n in names]
