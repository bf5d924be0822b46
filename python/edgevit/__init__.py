"""edgevit: Vision Transformer image classification from one memory-mapped ``.evit`` file.

The same Rust runtime as the ``edgevit`` command line, with the GIL released while it
works::

    import edgevit
    m = edgevit.Model("vit-tiny-int8.evit")
    for p in m.classify("cat.jpg", top_k=3):
        print(f"{p.prob:.3f} {p.label}")

``classify`` takes a path, a PIL image, or a numpy ``uint8`` array: ``HxWx3`` (RGB, or BGR with
``format="bgr"``), ``HxWx4`` (``format="rgba"``, the default, or ``"bgra"``; picamera2's
``"XBGR8888"`` and ``"XRGB8888"`` name them too), ``HxW`` (grey), or a YUV 4:2:0 frame with
``format="yuv420"`` or ``"nv12"`` and ``size=(W, H)`` (an ``(H*3/2) x stride`` array as
picamera2 gives it, whose padded rows are read in place, or a flat buffer; an unpadded
``(H*3/2) x W`` array needs no ``size``). Colour conversion is fused into the resize, as for the CLI's camera streams.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from . import _edgevit
from ._edgevit import ModelError, build_info

__all__ = ["Model", "ModelError", "Prediction", "build_info", "__version__"]
__version__: str = _edgevit.__version__

PathLike = Union[str, "os.PathLike[str]"]
Image = Any  # a path, a PIL.Image.Image or a numpy.ndarray


class Prediction(NamedTuple):
    """One ranked class."""

    label: str
    prob: float
    index: int


# Channels each packed format takes, by the words `format=` accepts (the CLI's --frame-format
# words, picamera2's format names, and PIL's modes).
_CHANNELS = {
    "rgb": 3, "rgb24": 3, "bgr888": 3,
    "bgr": 3, "bgr24": 3, "rgb888": 3,
    "rgba": 4, "rgbx": 4, "xbgr8888": 4,
    "bgra": 4, "bgrx": 4, "xrgb8888": 4,
    "gray": 1, "grey": 1, "gray8": 1, "l": 1,
}
_YUV = {"yuv420": "yuv420p", "yuv420p": "yuv420p", "i420": "yuv420p", "nv12": "nv12"}


def _is_path(image: Any) -> bool:
    return isinstance(image, (str, os.PathLike))


def _is_pil(image: Any) -> bool:
    # Duck-typed, so that PIL is needed only by those who pass PIL images.
    return hasattr(image, "getbands") and hasattr(image, "mode") and hasattr(image, "size")


class _Frame(NamedTuple):
    data: np.ndarray
    format: str
    width: int
    height: int
    stride: Optional[int]


def _check_size(size: Any) -> Optional[Tuple[int, int]]:
    """`size=` as (width, height) of positive whole numbers, or None."""
    if size is None:
        return None
    try:
        width, height = size
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in (width, height))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"size={size!r}: give (width, height) in pixels, e.g. size=(640, 480)")
    return int(width), int(height)


def _frame(image: Any, format: Optional[str], size: Optional[Tuple[int, int]]) -> _Frame:
    """A PIL image or numpy array as a raw frame the runtime reads in place."""
    size = _check_size(size)
    if _is_pil(image):
        if format is not None or size is not None:
            raise ValueError("format= and size= describe numpy arrays; a PIL image carries its own mode and size")
        if image.mode not in ("RGB", "RGBA", "L"):
            image = image.convert("RGB")
        format = {"RGB": "rgb24", "RGBA": "rgba", "L": "gray8"}[image.mode]
        image = np.asarray(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"an image is a path, a PIL image or a numpy uint8 array, not {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        hint = "; for a preprocessed float32 tensor use Model.logits()" if image.dtype.kind == "f" else ""
        raise ValueError(f"an image array must be uint8, not {image.dtype}{hint}")
    fmt = format.lower() if format is not None else None
    if fmt in _YUV:
        return _yuv_frame(image, _YUV[fmt], size)
    if fmt is not None and fmt not in _CHANNELS:
        words = ", ".join(sorted(set(_CHANNELS) | set(_YUV)))
        raise ValueError(f"format {format!r} is not one of: {words}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        channels = 1
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        channels = image.shape[2]
    else:
        raise ValueError(
            f"an image array is HxW (grey), HxWx3 or HxWx4, not shape {image.shape}; "
            "YUV frames need format='yuv420' or 'nv12'"
        )
    if fmt is None:
        fmt = {1: "gray8", 3: "rgb24", 4: "rgba"}[channels]
    elif _CHANNELS[fmt] != channels:
        raise ValueError(f"format {format!r} has {_CHANNELS[fmt]} channels; the array has {channels} (shape {image.shape})")
    height, width = image.shape[:2]
    if size is not None and size != (width, height):
        raise ValueError(f"size={size} but the array is {width}x{height} (shape {image.shape})")
    # In place when the array is already packed row after row; otherwise one copy.
    return _Frame(np.ascontiguousarray(image), fmt, width, height, None)


def _yuv_frame(image: np.ndarray, fmt: str, size: Optional[Tuple[int, int]]) -> _Frame:
    if image.ndim == 2:
        rows, stride = image.shape
        if size is None:
            if rows % 3:
                raise ValueError(
                    f"a {fmt} array of {rows} rows is not (H*3/2) x W: give size=(width, height)"
                )
            width, height = stride, rows * 2 // 3
        else:
            width, height = size
        return _Frame(np.ascontiguousarray(image), fmt, int(width), int(height), stride if stride != width else None)
    if image.ndim == 1:
        if size is None:
            raise ValueError(f"a flat {fmt} buffer needs size=(width, height)")
        width, height = size
        return _Frame(np.ascontiguousarray(image), fmt, int(width), int(height), None)
    raise ValueError(f"a {fmt} frame is a flat buffer or an (H*3/2) x W array, not shape {image.shape}")


class Model:
    """A ViT classifier opened from an ``.evit`` file made by ``edgevit-tools quantize``.

    ``threads``: worker threads (default: every core). ``mmap=False`` reads the file into
    memory instead of mapping it. Threads may share one model; each call uses its own
    scratch space. Use as a context manager, or call ``close()``, to release the file early.
    """

    def __init__(self, path: PathLike, threads: Optional[int] = None, mmap: bool = True) -> None:
        self._m = _edgevit.Model(os.fspath(path), threads=threads, mmap=mmap)
        self._config: Optional[dict] = None
        # Fixed for the file's life: asked of the extension once, not on every call.
        self._labels: List[str] = self._m.labels
        self._input_size: Tuple[int, int] = self._m.input_size
        self._channels: int = self.config["architecture"]["num_channels"]

    # --- what the model is -------------------------------------------------------------------

    @property
    def path(self) -> str:
        return self._m.path

    @property
    def threads(self) -> int:
        return self._m.threads

    @property
    def labels(self) -> List[str]:
        """Class names, by index."""
        self._check_open()
        return list(self._labels)

    @property
    def input_size(self) -> Tuple[int, int]:
        """(height, width) of the tensor the model takes."""
        return self._input_size

    @property
    def dtype(self) -> str:
        """How the weights are stored: ``"int8"``, ``"f16"`` or ``"f32"``."""
        return self._m.dtype

    @property
    def kernels(self) -> List[str]:
        """The kernels the forward pass runs on this CPU, by name."""
        return self._m.kernels

    @property
    def config(self) -> dict:
        """The model's configuration: architecture, preprocessing, weights and labels."""
        if self._config is None:
            self._config = json.loads(self._m.config_json)
        return self._config

    @property
    def closed(self) -> bool:
        return self._m.closed

    def _check_open(self) -> None:
        if self._m.closed:
            raise ValueError(f"{self.path}: the model is closed")

    def close(self) -> None:
        """Releases the model file. Later calls raise ``ValueError``."""
        self._m.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        inner = getattr(self, "_m", None)  # absent if __init__ raised
        return repr(inner) if inner is not None else "edgevit.Model(not opened)"

    # --- running it ----------------------------------------------------------------------------

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits of preprocessed ``float32`` tensors ``[3,H,W]`` or ``[N,3,H,W]``: ``[N, labels]``."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"a tensor is a numpy float32 array, not {type(x).__name__}")
        if x.dtype != np.float32:
            raise ValueError(f"a tensor must be float32, not {x.dtype} (convert with x.astype(np.float32))")
        height, width = self._input_size
        channels = self._channels
        want = (channels, height, width)
        if x.ndim == 3 and x.shape == want:
            n = 1
        elif x.ndim == 4 and x.shape[1:] == want:
            n = x.shape[0]
        else:
            raise ValueError(f"tensor shape {x.shape}; this model takes {list(want)} or [N, {channels}, {height}, {width}]")
        out = self._m.logits(np.ascontiguousarray(x))
        return out.reshape(n, len(self._labels))

    def preprocess(
        self,
        image: Image,
        *,
        format: Optional[str] = None,
        size: Optional[Tuple[int, int]] = None,
        yuv_matrix: str = "bt601",
        yuv_range: str = "limited",
    ) -> np.ndarray:
        """The ``float32`` ``[3,H,W]`` tensor the model sees for ``image`` (see ``classify``)."""
        if _is_path(image):
            path = os.fspath(image)
            if path.lower().endswith(".npy"):
                flat = self._npy(path)
            else:
                flat = self._m.preprocess_file(path)
        else:
            f = _frame(image, format, size)
            flat = self._m.preprocess_frame(f.data, f.format, f.width, f.height, f.stride, yuv_matrix, yuv_range)
        height, width = self._input_size
        return flat.reshape(-1, height, width)

    def classify(
        self,
        image: Image,
        top_k: int = 5,
        *,
        format: Optional[str] = None,
        size: Optional[Tuple[int, int]] = None,
        yuv_matrix: str = "bt601",
        yuv_range: str = "limited",
    ) -> List[Prediction]:
        """The ``top_k`` most probable classes for one image, best first.

        ``image``: a path (JPEG, PNG, WebP, BMP, or a preprocessed ``.npy`` tensor), a PIL
        image, or a numpy ``uint8`` array (see the module's help for layouts and ``format``).
        ``size=(width, height)`` for flat YUV buffers; ``yuv_matrix`` (``"bt601"``,
        ``"bt709"``) and ``yuv_range`` (``"limited"``, ``"full"``) as for the CLI's streams.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a whole number of at least 1, not {top_k!r}")
        logits = self._logits_one(image, format, size, yuv_matrix, yuv_range)
        return [Prediction(*p) for p in self._m.top_k(logits, top_k)]

    def last_timings(self) -> dict:
        """Milliseconds per kind of operation (patch_embed, layernorm, qkv, attention,
        projection, mlp, classifier) in the last forward pass of any thread: the network alone,
        without decoding, preprocessing or the call from Python."""
        return dict(self._m.last_timings())

    def classify_batch(self, images: Iterable[Image], top_k: int = 5, **options: Any) -> List[List[Prediction]]:
        """``classify`` for each image, in order; the options apply to every image."""
        return [self.classify(image, top_k, **options) for image in images]

    def _logits_one(self, image: Image, format, size, yuv_matrix: str, yuv_range: str) -> np.ndarray:
        if _is_path(image):
            path = os.fspath(image)
            if path.lower().endswith(".npy"):
                return self._m.logits(self._npy(path))
            return self._m.logits_file(path)
        f = _frame(image, format, size)
        return self._m.logits_frame(f.data, f.format, f.width, f.height, f.stride, yuv_matrix, yuv_range)

    def _npy(self, path: str) -> np.ndarray:
        """A ``.npy`` tensor of the model's input shape ([3,H,W] or [1,3,H,W]), as the CLI takes."""
        x = np.load(path, allow_pickle=False)
        height, width = self._input_size
        if x.dtype != np.float32:
            raise ValueError(f"{path}: a preprocessed tensor must be float32, not {x.dtype}")
        channels = self._channels
        if x.shape not in ((channels, height, width), (1, channels, height, width)):
            raise ValueError(
                f"{path}: tensor shape {list(x.shape)}; this model takes [{channels}, {height}, {width}] "
                f"or [1, {channels}, {height}, {width}]"
            )
        return np.ascontiguousarray(x).reshape(-1)

