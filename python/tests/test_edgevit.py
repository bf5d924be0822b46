"""The Python package against the CLI (bit for bit) and transformers' reference outputs."""

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import edgevit
from conftest import THREADS

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def int8(model_files):
    with edgevit.Model(model_files["int8"], threads=THREADS) as m:
        yield m


@pytest.fixture(scope="module")
def f32(model_files):
    with edgevit.Model(model_files["f32"], threads=THREADS) as m:
        yield m


def cli_logits(cli, model, paths):
    lines = cli.json_lines("classify", "-m", model, "--threads", THREADS, "--json", "--logits", *paths)
    return np.array([line["logits"] for line in lines], dtype=np.float32)


# --- metadata -------------------------------------------------------------------------------------


def test_metadata_is_the_files(int8, f32, cli, model_files):
    labels = cli.run("info", "--labels", "-m", model_files["int8"]).splitlines()
    assert int8.labels == labels and len(labels) == 1000
    assert int8.input_size == (224, 224)
    assert (int8.dtype, f32.dtype) == ("int8", "f32")
    assert int8.config["architecture"]["hidden_size"] == 192
    assert int8.config["labels"] == labels
    assert int8.threads == THREADS
    # The int8 GEMM kernel this CPU runs is the one `--version` names.
    assert int8.kernels[0] in cli.run("--version")
    assert "vit-tiny-int8.evit" in repr(int8) and "int8" in repr(int8)
    assert edgevit.__version__ in cli.run("--version")


# --- logits and preprocessing: the CLI's, bit for bit ----------------------------------------------


def test_logits_equal_the_cli_bit_for_bit(int8, f32, cli, model_files, reference, tmp_path):
    paths = []
    for i, (_, pixels, _) in enumerate(reference):
        paths.append(tmp_path / f"{i:02}.npy")
        np.save(paths[-1], pixels)
    batch = np.stack([p for _, p, _ in reference])
    for model, dtype in ((int8, "int8"), (f32, "f32")):
        want = cli_logits(cli, model_files[dtype], paths)
        got = model.logits(batch)
        assert got.shape == (len(reference), 1000) and got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
        # One tensor at a time and as a .npy path give the same.
        np.testing.assert_array_equal(model.logits(batch[3]), want[3:4])
        assert model.classify(paths[3], top_k=1)[0].index == int(np.argmax(want[3]))


def test_f32_agrees_with_transformers(f32, int8, reference):
    batch = np.stack([p for _, p, _ in reference])
    want = np.stack([l for _, _, l in reference])
    got = f32.logits(batch)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-3 * np.abs(want).max())
    assert (got.argmax(1) == want.argmax(1)).all()
    # int8 agrees with f32 on the top class for nearly every image (the Rust tests bound the
    # logits themselves).
    assert (int8.logits(batch).argmax(1) == want.argmax(1)).mean() >= 0.9


def test_classify_paths_gives_the_clis_top5(int8, cli, model_files, shared):
    photos = sorted((shared / "images/photos").iterdir()) + sorted((shared / "images/imagenet-samples").iterdir())
    lines = cli.json_lines("classify", "-m", model_files["int8"], "--threads", THREADS, "--json", *photos)
    assert len(lines) == len(photos)
    for path, line in zip(photos, lines):
        got = int8.classify(path)
        want = [edgevit.Prediction(t["label"], np.float32(t["prob"]), t["index"]) for t in line["top"]]
        assert got == want, path.name
        assert isinstance(got[0], edgevit.Prediction) and got[0].label == int8.labels[got[0].index]
    np.testing.assert_array_equal(
        int8.preprocess(photos[0]), int8.preprocess(str(photos[0]))
    )
    assert int8.classify_batch(photos[:3], top_k=2) == [int8.classify(p, 2) for p in photos[:3]]


# --- numpy frames: the CLI's camera-stream path ---------------------------------------------------


def rgb_to_yuv420(rgb):
    """BT.601 limited range, chroma averaged over 2x2 blocks (independent of the runtime)."""
    h, w, _ = rgb.shape
    f = rgb.astype(np.float64) / 255.0
    luma = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    y = np.round(16 + 219 * luma).astype(np.uint8)
    u_full = (f[..., 2] - luma) / 1.772
    v_full = (f[..., 0] - luma) / 1.402
    ch, cw = (h + 1) // 2, (w + 1) // 2
    pad = lambda a: np.pad(a, ((0, 2 * ch - h), (0, 2 * cw - w)), mode="edge")
    avg = lambda a: pad(a).reshape(ch, 2, cw, 2).mean(axis=(1, 3))
    u = np.clip(np.round(128 + 224 * avg(u_full)), 0, 255).astype(np.uint8)
    v = np.clip(np.round(128 + 224 * avg(v_full)), 0, 255).astype(np.uint8)
    return y, u, v


@pytest.fixture(scope="module")
def picture(shared):
    """A photo as an odd-sized 301x227 RGB array."""
    return np.asarray(PIL.open(shared / "images/photos/chelsea.png").convert("RGB").resize((301, 227)))


def stream_logits(cli, model, fmt, frame_bytes, w, h, stride=None):
    args = ["classify", "-m", model, "--threads", THREADS, "--stream", "--logits"]
    args += ["--frame-format", fmt, "--frame-size", f"{w}x{h}"]
    if stride:
        args += ["--frame-stride", stride]
    (line,) = cli.json_lines(*args, input=frame_bytes)
    top = [edgevit.Prediction(t["label"], np.float32(t["prob"]), t["index"]) for t in line["top"]]
    return np.array(line["logits"], dtype=np.float32), top


def test_numpy_frames_equal_the_clis_stream(int8, cli, model_files, picture):
    h, w, _ = picture.shape
    y, u, v = rgb_to_yuv420(picture)
    uv = np.stack([u, v], axis=-1).reshape(-1)
    grey = picture[..., 1].copy()
    rgba = np.concatenate([picture, np.full((h, w, 1), 255, np.uint8)], axis=2)
    cases = [
        # (array handed to Python, format=, size=, CLI format, the CLI's bytes)
        (picture, None, None, "rgb24", picture.tobytes()),
        (picture[..., ::-1], "bgr", None, "bgr24", np.ascontiguousarray(picture[..., ::-1]).tobytes()),
        (rgba, None, None, "rgba", rgba.tobytes()),
        (rgba, "XBGR8888", None, "rgba", rgba.tobytes()),
        (rgba[..., [2, 1, 0, 3]], "bgra", None, "bgra", np.ascontiguousarray(rgba[..., [2, 1, 0, 3]]).tobytes()),
        (grey, None, None, "gray8", grey.tobytes()),
        (np.concatenate([y.ravel(), u.ravel(), v.ravel()]), "yuv420", (w, h), "yuv420p", None),
        (np.concatenate([y.ravel(), uv]), "nv12", (w, h), "nv12", None),
    ]
    for array, fmt, size, cli_fmt, raw in cases:
        raw = raw if raw is not None else array.tobytes()
        want_logits, want_top = stream_logits(cli, model_files["int8"], cli_fmt, raw, w, h)
        assert int8.classify(array, format=fmt, size=size) == want_top, cli_fmt
        tensor = int8.preprocess(array, format=fmt, size=size)
        assert tensor.shape == (3, 224, 224) and tensor.dtype == np.float32
        np.testing.assert_array_equal(int8.logits(tensor)[0], want_logits, err_msg=cli_fmt)


def test_yuv_arrays_as_picamera2_gives_them(int8, cli, model_files, picture):
    # Even sides, 64-byte padded rows: the (H*3/2) x stride array picamera2 hands out.
    pic = np.ascontiguousarray(picture[:226, :300])
    h, w, _ = pic.shape
    y, u, v = rgb_to_yuv420(pic)
    stride = 320
    padded = np.full((h * 3 // 2, stride), 0xA5, np.uint8)
    padded[:h, :w] = y
    chroma = padded[h:].reshape(-1, stride // 2)  # chroma rows are half the stride
    chroma[: h // 2, : w // 2] = u
    chroma[h // 2 :, : w // 2] = v
    want_logits, want_top = stream_logits(cli, model_files["int8"], "yuv420p", padded.tobytes(), w, h, stride)
    assert int8.classify(padded, format="yuv420", size=(w, h)) == want_top
    tight = np.concatenate([y.ravel(), u.ravel(), v.ravel()])
    np.testing.assert_array_equal(int8.logits(int8.preprocess(tight, format="yuv420", size=(w, h)))[0], want_logits)
    # Unpadded, the array's own shape gives the size.
    assert int8.classify(tight.reshape(h * 3 // 2, w), format="I420") == int8.classify(tight, format="yuv420", size=(w, h))


def test_pil_images_and_views(int8, cli, model_files, shared, picture):
    # PNGs decode to the same pixels in PIL and edgevit: the same logits.
    path = shared / "images/photos/coffee.png"
    (line,) = cli.json_lines("classify", "-m", model_files["int8"], "--threads", THREADS, "--json", "--logits", path)
    image = PIL.open(path)
    np.testing.assert_array_equal(int8.logits(int8.preprocess(image))[0], np.array(line["logits"], np.float32))
    for mode in ("RGB", "RGBA", "L", "P", "CMYK"):
        converted = image.convert(mode)
        assert int8.classify(converted, top_k=1)[0].index == int8.classify(converted.convert("RGB"), top_k=1)[0].index
    # Views with gaps are copied, and give what their packed copies give.
    for view in (picture[::-1], picture[:, ::2], picture[10:200, 20:250], np.asfortranarray(picture)):
        assert int8.classify(view) == int8.classify(np.ascontiguousarray(view))


# --- errors ---------------------------------------------------------------------------------------


def test_bad_inputs_raise_clean_exceptions(int8, model_files, tmp_path, picture):
    bad = [
        (lambda: int8.classify(picture.astype(np.float64)), ValueError, "must be uint8"),
        (lambda: int8.classify(np.zeros((5, 5, 5), np.uint8)), ValueError, "not shape (5, 5, 5)"),
        (lambda: int8.classify(np.zeros((0, 5, 3), np.uint8)), ValueError, "empty"),
        (lambda: int8.classify(picture, format="rgba"), ValueError, "has 4 channels"),
        (lambda: int8.classify(picture, format="yuv422"), ValueError, "is not one of"),
        (lambda: int8.classify(np.zeros(1000, np.uint8), format="nv12", size=(64, 48)), ValueError, "4608 bytes"),
        (lambda: int8.classify(np.zeros(1000, np.uint8), format="nv12"), ValueError, "needs size="),
        (lambda: int8.classify(picture, top_k=0), ValueError, "top_k"),
        (lambda: int8.classify(picture, size=(1, 1)), ValueError, "size="),
        (lambda: int8.classify(np.zeros(1000, np.uint8), format="nv12", size=(64, 48, 1)), ValueError, "(width, height)"),
        (lambda: int8.classify(np.zeros(1000, np.uint8), format="nv12", size=(-64, 48)), ValueError, "(width, height)"),
        (lambda: int8.classify([1, 2, 3]), TypeError, "not list"),
        (lambda: int8.classify(tmp_path / "missing.png"), FileNotFoundError, "missing.png"),
        (lambda: int8.logits(np.zeros((3, 224, 224), np.float64)), ValueError, "must be float32"),
        (lambda: int8.logits(np.zeros((3, 100, 100), np.float32)), ValueError, "tensor shape"),
        (lambda: int8.logits(np.full((3, 224, 224), np.nan, np.float32)), ValueError, "NaN"),
        (lambda: edgevit.Model(tmp_path / "missing.evit"), FileNotFoundError, "missing.evit"),
        (lambda: edgevit.Model(model_files["int8"], threads=0), ValueError, "at least 1"),
        (lambda: edgevit.Model(model_files["int8"], threads=100000), ValueError, "256"),
    ]
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not a picture")
    bad.append((lambda: int8.classify(not_an_image), ValueError, "notes.png"))
    damaged = tmp_path / "damaged.evit"
    damaged.write_bytes(Path(model_files["int8"]).read_bytes()[:100_000])
    bad.append((lambda: edgevit.Model(damaged), edgevit.ModelError, "damaged.evit"))
    bad.append((lambda: edgevit.Model(tmp_path), ValueError, "is a folder; pass the model file itself"))
    for call, kind, needle in bad:
        with pytest.raises(kind) as e:
            call()
        assert needle in str(e.value), (needle, str(e.value))


def test_a_deleted_or_closed_model(model_files, tmp_path, picture):
    copy = tmp_path / "copy.evit"
    shutil.copy(model_files["int8"], copy)
    m = edgevit.Model(copy, threads=1)
    want = m.classify(picture)
    os.remove(copy)  # the mapping keeps the file's pages
    assert m.classify(picture) == want
    in_memory = edgevit.Model(model_files["int8"], threads=1, mmap=False)
    assert in_memory.classify(picture) == want
    m.close()
    assert m.closed
    for call in (lambda: m.classify(picture), lambda: m.labels, lambda: m.logits(np.zeros((3, 224, 224), np.float32))):
        with pytest.raises(ValueError, match="the model is closed"):
            call()
    assert "closed" in repr(m)


# --- threads --------------------------------------------------------------------------------------


def test_the_gil_is_released_during_inference(int8, reference):
    batch = np.stack([p for _, p, _ in reference][:4])
    count, stop = [0], threading.Event()

    def spin():
        while not stop.is_set():
            count[0] += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        time.sleep(0.01)
        before = count[0]
        int8.logits(batch)
        during = count[0] - before
    finally:
        stop.set()
        spinner.join()
    # Holding the GIL through the call would leave the spinner at (nearly) zero.
    assert during > 1000, during


def test_threads_share_one_model(int8, reference):
    tensors = [p for _, p, _ in reference][:6]
    want = [int8.logits(t) for t in tensors]
    got = [None] * len(tensors)

    def work(i):
        for _ in range(3):
            got[i] = int8.logits(tensors[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(tensors))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
