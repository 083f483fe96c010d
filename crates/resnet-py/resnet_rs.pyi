"""resnet_rs: residual networks on the CPU, in Rust, on NumPy float32 arrays.

Models are loaded from weights files (safetensors with torchvision, timm or HF transformers key
names). Every call releases the GIL while it computes, so Python threads that share one model
run in parallel (each call also uses the model's own ``threads``).

Arrays passed in must be C-contiguous, aligned, native-endian ``float32``: they are then read in
place, without a copy. Anything else is refused (``TypeError`` for a wrong type or dtype,
``ValueError`` for a wrong rank, a non-contiguous array, a shape the model does not take, or a
NaN/infinite value) with the message of the Rust library; nothing is converted silently.
"""

import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

PathLike = Union[str, "os.PathLike[str]"]
F32Array = npt.NDArray[np.float32]

class WeightsError(Exception):
    """A weights file that cannot be read or does not describe a network this package runs
    (the message names the key and the expected and found values)."""

class ResNet:
    """A residual classification network (ResNet-18 … 152, ResNeXt, Wide ResNet, CIFAR nets)."""

    @staticmethod
    def from_file(
        path: PathLike, threads: Optional[int] = None, precision: str = "f32"
    ) -> "ResNet":
        """Load a network; the architecture comes from the keys and shapes.

        ``threads``: threads one call runs on (default: all cores). ``precision``: ``"f32"``,
        or ``"bf16"`` for convolutions in bf16 products with f32 sums (about 1e-2 relative to
        f32) where the CPU has AVX512-BF16. Raises ``FileNotFoundError`` when the file is
        missing, ``WeightsError`` when it cannot be used, ``ValueError`` for ``threads=0`` or
        another precision, ``RuntimeError`` for ``"bf16"`` on a CPU without AVX512-BF16.
        """

    def forward(self, x: F32Array) -> F32Array:
        """Logits ``[N, num_classes]`` of a normalised ``[N, C, H, W]`` batch (any batch size,
        any spatial size of at least 1x1)."""

    def features(self, x: F32Array) -> F32Array:
        """The pooled embedding ``[N, feature_dim]`` (the classifier's input)."""

    def classify(
        self,
        items: Union[PathLike, bytes, F32Array, Sequence[Union[PathLike, bytes, F32Array]]],
        k: int = 5,
    ) -> List[List[Tuple[int, Optional[str], float]]]:
        """The ``k`` most probable classes of each input as ``(class, name, probability)``,
        most probable first; the same numbers as ``resnet classify --top k``.

        ``items``: image paths or encoded image bytes (a file's contents), decoded and
        preprocessed as ``resnet classify`` does (for torchvision nets, torchvision's eval
        transform), and/or preprocessed ``[C, H, W]`` or ``[1, C, H, W]`` arrays; they go
        through the network 8 at a time, as the CLI's default ``--batch``. A single item counts
        as a list of one. ``probability`` is the float32 value, as the float nearest its
        shortest decimal form (what ``resnet classify --json`` prints). ``name`` is
        ``None`` when the model has no class names (ImageNet's for 1000-class torchvision nets,
        else the file's metadata ``classes``).
        """

    def preprocess(self, image: Union[PathLike, bytes]) -> F32Array:
        """The ``[1, C, H, W]`` tensor ``classify`` computes from an image (a path or encoded
        bytes) for this model."""

    @property
    def arch(self) -> str:
        """The architecture's name (``resnet18``, ``cifar-resnet20``, …)."""

    @property
    def num_classes(self) -> int: ...
    @property
    def feature_dim(self) -> int: ...
    @property
    def in_channels(self) -> int: ...
    @property
    def threads(self) -> int: ...
    @property
    def precision(self) -> str: ...
    @property
    def class_names(self) -> Optional[List[str]]: ...

class Edsr:
    """An EDSR super-resolution network (the reference code's key names)."""

    @staticmethod
    def from_file(
        path: PathLike, threads: Optional[int] = None, precision: str = "f32"
    ) -> "Edsr":
        """Load a network; blocks, features and scale come from the keys and shapes;
        ``precision`` as for ``ResNet.from_file``."""

    def enhance(
        self, x: F32Array, tile: Optional[int] = 192, overlap: Optional[int] = None
    ) -> F32Array:
        """Super-resolve ``[N, 3, H, W]`` (RGB in ``0..rgb_range``, see ``load_rgb``) into
        ``[N, 3, H*scale, W*scale]``, ``tile`` x ``tile`` input pixels at a time (bounded
        memory; the untiled result up to float rounding with the default overlap).
        ``tile=None``: in one piece."""

    @property
    def scale(self) -> int: ...
    @property
    def rgb_range(self) -> float: ...
    @property
    def threads(self) -> int: ...
    @property
    def precision(self) -> str: ...

def preprocess(
    image: Union[PathLike, bytes],
    resize: Optional[int] = 256,
    crop: Optional[int] = 224,
    mean: Optional[Tuple[float, float, float]] = None,
    std: Optional[Tuple[float, float, float]] = None,
) -> F32Array:
    """torchvision's eval transform of an image (a path or encoded bytes): ``[1, 3, crop, crop]``
    float32.

    PIL RGB, Resize(resize, bilinear, antialias), CenterCrop(crop), ToTensor, Normalize(mean,
    std) (ImageNet's by default), reproduced bit for bit (JPEGs decoded as libjpeg-turbo does).
    """

def load_rgb(path: PathLike) -> F32Array:
    """An image file as ``[1, 3, H, W]`` float32 RGB in ``0..255``, the input of
    ``Edsr.enhance``."""
