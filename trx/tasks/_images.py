"""Image data for cifar_resnet: readers for the distributed file formats, and on-device augmentation.

Every reader returns uint8 images (N, C, 32, 32) and int64 labels, so one code path serves all
data sets: the task indexes, crops and normalizes these tensors wherever they live (CPU or GPU).

CIFAR-10 is read by `torchvision.datasets.CIFAR10(root, download=False)`, which also checks the
MD5 sum of every batch file against the official download (the tests, which write tiny folders
in the same pickle format, replace that check).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from trx.tasks.base import DataError, generator

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_INSTALL = "apt-get install -y dataset-fashion-mnist"
CIFAR_DIR = Path("data")
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

# idx type byte → numpy element type (big-endian on disk)
IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class ImageData:
    train_x: Tensor  # (N, C, 32, 32) uint8
    train_y: Tensor  # (N,) int64
    val_x: Tensor  # (M, C, 32, 32) uint8
    val_y: Tensor  # (M,) int64
    classes: int

    @property
    def channels(self) -> int:
        return self.train_x.shape[1]

    def mean_std(self) -> tuple[Tensor, Tensor]:
        """Per-channel mean and std of the training images, in [0, 1] units: (C,), (C,)."""
        # From a 256-bin histogram per channel: exact, and no float copy of the whole data set.
        values = torch.arange(256, dtype=torch.float64) / 255
        mean, std = [], []
        for c in range(self.channels):
            counts = torch.bincount(self.train_x[:, c].flatten(), minlength=256).double()
            m = (counts * values).sum() / counts.sum()
            mean.append(m)
            std.append(((counts * (values - m) ** 2).sum() / (counts.sum() - 1)).sqrt())
        return torch.stack(mean).float(), torch.stack(std).clamp_min(1e-3).float()

    def limit(self, train_size: int | None, val_size: int | None) -> ImageData:
        """The first `train_size` / `val_size` examples (the files are already shuffled)."""
        return ImageData(
            self.train_x[:train_size], self.train_y[:train_size], self.val_x[:val_size], self.val_y[:val_size], self.classes
        )


# ---- Fashion-MNIST: gzip'ed idx files --------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """An idx array: magic 0x00 0x00 <type> <ndim>, ndim big-endian uint32 sizes, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in IDX_TYPES:
        raise ValueError(f"{path}: not an idx file (magic bytes {raw[:4].hex()})")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=IDX_TYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} values")
    return data.reshape(shape).astype(data.dtype.newbyteorder("="))


def load_fashion_mnist(folder: Path) -> ImageData:
    """Fashion-MNIST from its four idx.gz files; 28×28 images zero-padded to 32×32 (one channel)."""
    missing = [name for pair in FASHION_FILES.values() for name in pair if not (folder / name).is_file()]
    if missing:
        where = "" if folder == FASHION_DIR else f", or point task.data_dir at a folder holding {', '.join(missing)}"
        raise DataError(
            "task.data_dir",
            f"Fashion-MNIST not found in {folder} (missing {', '.join(missing)}); "
            f"install the Debian package dataset-fashion-mnist: {FASHION_INSTALL}{where}",
        )
    out = []
    for split in ("train", "val"):
        images, labels = (folder / name for name in FASHION_FILES[split])
        try:
            x, y = read_idx(images), read_idx(labels)
        except (OSError, EOFError, ValueError) as exc:
            raise DataError("task.data_dir", f"cannot read Fashion-MNIST: {exc}") from None
        if x.ndim != 3 or y.shape != (len(x),):
            raise DataError("task.data_dir", f"{images.name}: expected (N, 28, 28) images and N labels, got {x.shape}, {y.shape}")
        pad_h, pad_w = 32 - x.shape[1], 32 - x.shape[2]
        x = torch.from_numpy(x.astype(np.uint8))[:, None]
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))  # centred, black border
        out += [x, torch.from_numpy(y.astype(np.int64))]
    return ImageData(*out, classes=10)


# ---- CIFAR-10: the "python version" pickles --------------------------------------------------
def cifar_folder(data_dir: Path) -> Path:
    """`data_dir/cifar-10-batches-py`, or `data_dir` itself when it holds the batch files."""
    nested = data_dir / CIFAR_FOLDER
    return data_dir if not nested.is_dir() and (data_dir / CIFAR_TEST).is_file() else nested


def load_cifar10(data_dir: Path) -> ImageData:
    folder = cifar_folder(data_dir)
    missing = [name for name in (*CIFAR_TRAIN, CIFAR_TEST) if not (folder / name).is_file()]
    if missing:
        raise DataError(
            "task.data_dir",
            f"CIFAR-10 not found: expected {folder}/ holding data_batch_1 … data_batch_5 and test_batch "
            f"(missing {', '.join(missing)}); download the python version, {CIFAR_URL}, and extract it "
            f"into {data_dir} (tar xzf cifar-10-python.tar.gz -C {data_dir}), or set task.data_dir",
        )
    if folder.name != CIFAR_FOLDER:
        raise DataError("task.data_dir", f"the CIFAR-10 batch files must sit in a folder named {CIFAR_FOLDER}, got {folder}")
    from torchvision.datasets import CIFAR10  # imported here: it is slow and only this path needs it

    try:
        train, test = (CIFAR10(root=str(folder.parent), train=split, download=False) for split in (True, False))
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        raise DataError(
            "task.data_dir", f"CIFAR-10 in {folder} does not match the official files' checksums ({exc}); download it again from {CIFAR_URL}"
        ) from None
    except (OSError, EOFError, ValueError, KeyError, pickle.UnpicklingError) as exc:
        raise DataError("task.data_dir", f"cannot read CIFAR-10 in {folder}: {type(exc).__name__}: {exc}") from None

    def tensors(ds) -> tuple[Tensor, Tensor]:  # torchvision keeps (N, 32, 32, 3) uint8 and a label list
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets, dtype=torch.int64)

    return ImageData(*tensors(train), *tensors(test), len(train.classes) if train.classes else 10)


# ---- synthetic: CIFAR-10's shapes, learnable labels ------------------------------------------
def make_synthetic(seed: int, train_size: int, val_size: int, classes: int = 10) -> ImageData:
    """Noisy copies of one smooth random template per class, so the loss can fall (not just be memorized)."""
    g = generator(seed, 7)
    templates = F.interpolate(torch.rand(classes, 3, 4, 4, generator=g), size=32, mode="bilinear")  # (K, 3, 32, 32)

    def draw(n: int) -> tuple[Tensor, Tensor]:
        y = torch.randint(classes, (n,), generator=g)
        x = torch.empty(n, 3, 32, 32, dtype=torch.uint8)
        for start in range(0, n, 4096):  # in chunks: 50 000 float images would be 600 MB at once
            part = templates[y[start : start + 4096]]
            part += 0.25 * torch.randn(part.shape, generator=g)
            x[start : start + 4096] = part.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
        return x, y

    return ImageData(*draw(train_size), *draw(val_size), classes=classes)


# ---- augmentation ----------------------------------------------------------------------------
def crop_flip(x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor | None, pad: int) -> Tensor:
    """Random-crop augmentation as one gather: image b of x (B, C, H, W) is cut at offset
    (dy[b], dx[b]) ∈ [0, 2·pad]² from its zero-padded copy, and mirrored where flip[b].

    Pure tensor ops (no per-image Python loop, no host sync), so it runs where x lives.
    """
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (B, W)
    if flip is not None:
        cols = torch.where(flip[:, None], cols.flip(1), cols)  # reading columns backwards mirrors the crop
    return padded[
        torch.arange(b, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
