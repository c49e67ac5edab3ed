"""Image classification with a ResNet: CIFAR-10, Fashion-MNIST (padded to 32×32) or synthetic images.

The data live as uint8 tensors on the training device; a batch is gathered, augmented (random
crop with 4-px zero padding; plus horizontal flips for CIFAR-10 and synthetic, not Fashion-MNIST,
whose garments and shoes all face one way) and normalized there with tensor ops, so a GPU step
needs no host sync and no data-loader workers. The random numbers come from CPU generators seeded
by (seed, epoch) and (seed, step): batches are identical on every device and a resume is exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from trx.tasks import _images
from trx.tasks._amp import Amp, amp_enabled, autocast
from trx.tasks.base import Task, TaskOptions, generator, register_task

CROP_PAD = 4


class CifarResnetOptions(TaskOptions):
    dataset: Literal["cifar10", "fashion_mnist", "synthetic"] = Field(
        "fashion_mnist", description="cifar10 (local files) | fashion_mnist (Debian package) | synthetic"
    )
    data_dir: str | None = Field(
        None,
        description="folder holding cifar-10-batches-py/ (default ./data) or Fashion-MNIST's idx .gz files "
        "(default /usr/share/datasets/fashion-mnist)",
    )
    train_size: int | None = Field(None, ge=1, description="use the first N training images (default: all)")
    val_size: int | None = Field(None, ge=1, description="use the first N held-out images (default: all)")
    batch_size: int = Field(256, ge=1, description="images per update")
    eval_batch_size: int = Field(1000, ge=1, description="images per forward pass in evaluation")
    augment: bool = Field(True, description="random crop (4-px padding), plus horizontal flip except on Fashion-MNIST")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="label smoothing of the training loss")
    model: Literal["fast", "resnet18"] = Field("fast", description="fast: ResNet-9 of the speed runs | resnet18")
    width: int = Field(32, ge=4, description="fast: base width w (channels w, 2w, 4w, 8w; about 1600·w² weights)")
    amp: Amp = "auto"
    compile: bool = Field(False, description="torch.compile the model")


# ---- models ----------------------------------------------------------------------------------
def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.a, self.b = conv_bn(channels, channels), conv_bn(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.b(self.a(x))


class FastResNet(nn.Module):
    """ResNet-9 of the DAWNBench CIFAR-10 speed runs (Page, 2018) at base width w.

    Three stages halve the resolution 32 → 16 → 8 → 4; the residual blocks sit at 16×16 and 4×4,
    where they are cheap. With w = 64 it is Page's network (6.5 M weights); w = 32 gives 1.6 M.
    """

    def __init__(self, in_channels: int, classes: int, width: int):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            conv_bn(in_channels, w),  # (B, w, 32, 32)
            conv_bn(w, 2 * w), nn.MaxPool2d(2), Residual(2 * w),  # (B, 2w, 16, 16)
            conv_bn(2 * w, 4 * w), nn.MaxPool2d(2),  # (B, 4w, 8, 8)
            conv_bn(4 * w, 8 * w), nn.MaxPool2d(2), Residual(8 * w),  # (B, 8w, 4, 4)
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),  # (B, 8w)
        )
        self.head = nn.Linear(8 * w, classes, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        # Max-pooled ReLU features are O(1) and positive, so raw logits start large; Page's 1/8
        # keeps the initial softmax near uniform (loss ≈ ln classes) without a tuned init.
        return self.head(self.body(x)) * 0.125


def resnet18(in_channels: int, classes: int) -> nn.Module:
    """torchvision's ResNet-18 for 32×32 inputs: a 3×3 stride-1 stem and no max-pool, so the
    four stages see 32, 16, 8, 4 pixels instead of ImageNet's 56 … 7 (which would leave 1×1)."""
    import torchvision  # imported here: it is slow, and only this model needs it

    model = torchvision.models.resnet18(weights=None, num_classes=classes)
    model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision inits convs
    model.maxpool = nn.Identity()
    return model


# ---- the task --------------------------------------------------------------------------------
@register_task
class CifarResnet(Task):
    name = "cifar_resnet"
    loss_unit = "nats"  # a cross-entropy
    description = "ResNet (fast ResNet-9 or ResNet-18) on CIFAR-10, Fashion-MNIST or synthetic 32×32 images"
    Options = CifarResnetOptions

    @classmethod
    def chance(cls, options: CifarResnetOptions) -> dict[str, float]:  # type: ignore[override]
        return {"val_acc": 0.1}  # ten classes in every data set it reads

    def prepare(self) -> None:
        o = self.options
        if o.dataset == "synthetic":
            data = _images.make_synthetic(self.seed, o.train_size or 50_000, o.val_size or 10_000)
            self.synthetic = True
        elif o.dataset == "cifar10":
            data = _images.load_cifar10(Path(o.data_dir) if o.data_dir else _images.CIFAR_DIR)
        else:
            data = _images.load_fashion_mnist(Path(o.data_dir) if o.data_dir else _images.FASHION_DIR)
        mean, std = data.mean_std()  # over the whole training split: the standard constants
        data = data.limit(o.train_size, o.val_size)
        dev = self.device
        self.train_x, self.train_y = data.train_x.to(dev), data.train_y.to(dev)
        self.val_x, self.val_y = data.val_x.to(dev), data.val_y.to(dev)
        self.mean, self.std = mean.view(1, -1, 1, 1).to(dev), std.view(1, -1, 1, 1).to(dev)
        self.classes, self.channels = data.classes, data.channels
        self.flip = o.dataset != "fashion_mnist"
        self.channels_last = dev.type == "cuda"
        self.amp = amp_enabled(o.amp, dev)
        self._perm: tuple[int, Tensor] | None = None

    def prepare_shapes(self) -> None:
        self.channels = 1 if self.options.dataset == "fashion_mnist" else 3  # grey or RGB, 32×32
        self.classes = 10  # every data set the task reads has ten classes
        self.channels_last = self.device.type == "cuda"

    def build_model(self) -> nn.Module:
        o = self.options
        if o.model == "fast":
            model = FastResNet(self.channels, self.classes, o.width)
        else:
            model = resnet18(self.channels, self.classes)
        model = model.to(self.device, memory_format=torch.channels_last if self.channels_last else torch.preserve_format)
        if o.compile:
            model.compile()
        return model

    def param_roles(self, model: nn.Module) -> dict[str, str]:
        """Conv and linear weights are matrices and BatchNorm gains/biases vectors (the defaults);
        the classifier's final linear weight is the head."""
        head = "head.weight" if self.options.model == "fast" else "fc.weight"
        return {head: "head"}

    # ---- batches ---------------------------------------------------------------------------
    def _epoch_perm(self, epoch: int) -> Tensor:
        """The order of the training set in `epoch`, seeded by (seed, epoch); the last one is cached."""
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, torch.randperm(len(self.train_y), generator=generator(self.seed, 0, epoch)))
        return self._perm[1]

    def indices(self, step: int) -> Tensor:
        """Training-set indices of update `step`: consecutive slices of per-epoch permutations
        (a batch that crosses an epoch boundary takes the start of the next permutation)."""
        n, bs = len(self.train_y), self.options.batch_size
        pos = torch.arange(step * bs, (step + 1) * bs)
        epoch, offset = pos // n, pos % n
        idx = torch.empty(bs, dtype=torch.long)
        for e in range(int(epoch[0]), int(epoch[-1]) + 1):
            here = epoch == e
            idx[here] = self._epoch_perm(e)[offset[here]]
        return idx

    def _to_device(self, t: Tensor) -> Tensor:
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """(images, labels) of update `step`: augmented, normalized, on the device."""
        idx = self._to_device(self.indices(step))
        x, y = self.train_x[idx], self.train_y[idx]  # (B, C, 32, 32) uint8, (B,)
        if self.options.augment:
            g, bs = generator(self.seed, 1, step), len(idx)
            shifts = torch.randint(2 * CROP_PAD + 1, (2, bs), generator=g)
            flip = torch.rand(bs, generator=g) < 0.5
            shifts, flip = self._to_device(shifts), self._to_device(flip)
            x = _images.crop_flip(x, shifts[0], shifts[1], flip if self.flip else None, CROP_PAD)
        return self.normalize(x), y

    def normalize(self, x: Tensor) -> Tensor:
        x = (x.float() / 255 - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # ---- loss and evaluation ---------------------------------------------------------------
    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        with autocast(self.amp, self.device):
            logits = model(x)
        return F.cross_entropy(logits.float(), y, label_smoothing=self.options.label_smoothing)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Loss and accuracy on the held-out images (no augmentation), in batches; one host sync."""
        total_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for start in range(0, len(self.val_y), self.options.eval_batch_size):
            x = self.normalize(self.val_x[start : start + self.options.eval_batch_size])
            y = self.val_y[start : start + self.options.eval_batch_size]
            with autocast(self.amp, self.device):
                logits = model(x).float()
            total_loss += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        n = len(self.val_y)
        return {"val_loss": float(total_loss) / n, "val_acc": float(correct) / n}
