"""Types of the Rust extension module; use the `edgevit` package, which wraps it."""

from typing import List, Optional, Tuple

import numpy as np
import numpy.typing as npt

__version__: str

class ModelError(Exception):
    """A model file that is damaged, truncated, or not an .evit file made by edgevit-tools."""

def build_info() -> str:
    """Version, git commit, target, this CPU's features and the kernels it runs."""

class Model:
    def __init__(self, path: str, threads: Optional[int] = None, mmap: bool = True) -> None: ...
    @property
    def path(self) -> str: ...
    @property
    def threads(self) -> int: ...
    @property
    def labels(self) -> List[str]: ...
    @property
    def input_size(self) -> Tuple[int, int]: ...
    @property
    def dtype(self) -> str: ...
    @property
    def kernels(self) -> List[str]: ...
    @property
    def config_json(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def last_timings(self) -> List[Tuple[str, float]]: ...
    def logits(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...
    def preprocess_file(self, path: str) -> npt.NDArray[np.float32]: ...
    def logits_file(self, path: str) -> npt.NDArray[np.float32]: ...
    def preprocess_frame(
        self,
        data: npt.NDArray[np.uint8],
        format: str,
        width: int,
        height: int,
        stride: Optional[int] = None,
        yuv_matrix: str = "bt601",
        yuv_range: str = "limited",
    ) -> npt.NDArray[np.float32]: ...
    def logits_frame(
        self,
        data: npt.NDArray[np.uint8],
        format: str,
        width: int,
        height: int,
        stride: Optional[int] = None,
        yuv_matrix: str = "bt601",
        yuv_range: str = "limited",
    ) -> npt.NDArray[np.float32]: ...
    def top_k(self, logits: npt.NDArray[np.float32], k: int) -> List[Tuple[str, float, int]]: ...
