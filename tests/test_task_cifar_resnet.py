"""cifar_resnet: the file formats, missing data, roles, deterministic batches, augmentation, training."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from trx.config import load_config
from trx.optim import plan_groups
from trx.tasks import DataError
from trx.tasks._images import FASHION_DIR, FASHION_FILES, crop_flip, read_idx
from trx.tasks.cifar_resnet import CifarResnet, CifarResnetOptions

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
MUON_ARM = {
    "lr": 0.1,
    "filter": {"name": "nesterov", "beta": 0.6},
    "normalizer": {"name": "muon", "ns_steps": 3, "scale": "none"},
    "aux": {"lr": 0.05, "filter": {"name": "nesterov", "beta": 0.85}, "normalizer": {"name": "identity"}},
}


@pytest.fixture(autouse=True)
def one_thread():
    """The models here are tiny: one thread is as fast as two, and it does not collapse when a
    shared 2-core runner is oversubscribed (spinning OpenMP threads made these tests 50× slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_task(seed: int = 0, **options) -> CifarResnet:
    task = CifarResnet(CifarResnetOptions(**options), seed, CPU)
    task.prepare()
    return task


# ---- files in the real formats, written here ----------------------------------------------
def write_cifar(root: Path, per_batch: int = 6) -> dict[str, np.ndarray]:
    """A tiny `cifar-10-batches-py`: the official pickles' layout, a few images per batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name.encode(), "labels": labels, "data": data, "filenames": [b"x.png"] * per_batch}, f)
        written[name] = data
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"num_cases_per_batch": per_batch, "label_names": [f"c{i}" for i in range(10)], "num_vis": 3072}, f)
    return written


def write_idx(path: Path, array: np.ndarray) -> None:
    """An unsigned-byte idx file, gzip'ed: magic 00 00 08 ndim, big-endian sizes, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fashion(folder: Path, n: int = 12) -> np.ndarray:
    rng = np.random.default_rng(1)
    images = rng.integers(1, 256, (n, 28, 28), dtype=np.uint8)
    for split, (img_name, lbl_name) in FASHION_FILES.items():
        write_idx(folder / img_name, images)
        write_idx(folder / lbl_name, rng.integers(0, 10, n, dtype=np.uint8))
    return images


@pytest.fixture
def accept_test_files(monkeypatch):
    """torchvision checks every batch file against the official MD5 sums; the tiny folders written
    here are real pickle files but not the official ones, so the checksum alone is replaced."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)


def test_cifar10_checksums_are_checked(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(DataError, match="does not match the official files' checksums") as err:
        make_task(dataset="cifar10", data_dir=str(tmp_path))
    assert err.value.key == "task.data_dir"


def test_cifar10_reads_the_pickle_folder(tmp_path, accept_test_files):
    written = write_cifar(tmp_path)
    task = make_task(dataset="cifar10", data_dir=str(tmp_path), augment=False, batch_size=4)
    assert task.train_x.shape == (30, 3, 32, 32) and task.val_x.shape == (6, 3, 32, 32)
    assert task.classes == 10 and task.channels == 3 and not task.synthetic
    # rows of 3072 are 1024 red, then 1024 green, then 1024 blue values, row-major
    first = written["data_batch_1"][0]
    assert torch.equal(task.train_x[0], torch.from_numpy(first.reshape(3, 32, 32)))
    assert torch.equal(task.val_x[-1], torch.from_numpy(written["test_batch"][-1].reshape(3, 32, 32)))
    # data_dir may also be the batches folder itself
    direct = make_task(dataset="cifar10", data_dir=str(tmp_path / "cifar-10-batches-py"))
    assert torch.equal(direct.train_x, task.train_x)


def test_missing_cifar_names_the_key_and_what_to_put_where(tmp_path):
    with pytest.raises(DataError) as err:
        make_task(dataset="cifar10", data_dir=str(tmp_path))
    assert err.value.key == "task.data_dir"
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "data_batch_1" in msg and "cifar-10-python.tar.gz" in msg


def test_corrupt_cifar_is_a_data_error(tmp_path, accept_test_files):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cannot read CIFAR-10"):
        make_task(dataset="cifar10", data_dir=str(tmp_path))


def test_idx_parser_round_trip_and_bad_magic(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", array)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)
    (tmp_path / "plain").write_bytes(bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 2) + struct.pack(">2i", -5, 70000))
    assert read_idx(tmp_path / "plain").tolist() == [-5, 70000]  # big-endian int32
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "bad")


def test_fashion_mnist_from_written_idx_files_is_padded_to_32(tmp_path):
    images = write_fashion(tmp_path)
    task = make_task(dataset="fashion_mnist", data_dir=str(tmp_path), augment=False)
    assert task.train_x.shape == (12, 1, 32, 32) and task.channels == 1
    assert torch.equal(task.train_x[:, 0, 2:30, 2:30], torch.from_numpy(images))
    border = task.train_x.clone()
    border[:, :, 2:30, 2:30] = 0
    assert border.sum() == 0  # a 2-px black frame


def test_fashion_mnist_from_the_installed_package():
    task = make_task(dataset="fashion_mnist", train_size=100, val_size=50)
    assert task.train_x.shape == (100, 1, 32, 32) and task.val_x.shape == (50, 1, 32, 32)
    assert task.train_y.min() >= 0 and task.train_y.max() <= 9 and task.classes == 10
    # normalization uses the statistics of the full 60 000 training images (padded)
    assert task.mean.item() == pytest.approx(0.2860 * 28 * 28 / 32**2, abs=2e-3)
    x, _ = task.batch(0)
    assert x.mean().abs() < 0.5 and 0.5 < x.std() < 2.0


def test_missing_fashion_mnist_names_the_debian_package(tmp_path):
    with pytest.raises(DataError) as err:
        make_task(dataset="fashion_mnist", data_dir=str(tmp_path))
    assert err.value.key == "task.data_dir"
    assert "apt-get install -y dataset-fashion-mnist" in str(err.value) and "train-images-idx3-ubyte.gz" in str(err.value)
    assert FASHION_DIR.is_dir()  # CI installs the package; the test above must not be skipped


def test_synthetic_is_flagged_and_has_cifar_shapes():
    task = make_task(dataset="synthetic", train_size=64, val_size=32)
    assert task.synthetic and task.train_x.shape == (64, 3, 32, 32) and task.val_x.dtype == torch.uint8


# ---- batches and augmentation ----------------------------------------------------------------
def test_batches_are_a_pure_function_of_seed_and_step():
    a, b = make_task(dataset="synthetic", train_size=100, val_size=8, batch_size=32), None
    b = make_task(dataset="synthetic", train_size=100, val_size=8, batch_size=32)
    later = [b.batch(t) for t in (7, 3, 0)]  # any call order
    for t, (x, y) in zip((7, 3, 0), later):
        xa, ya = a.batch(t)
        assert torch.equal(xa, x) and torch.equal(ya, y)
    assert not torch.equal(a.batch(0)[0], a.batch(1)[0])
    other = make_task(seed=1, dataset="synthetic", train_size=100, val_size=8, batch_size=32)
    assert not torch.equal(other.batch(0)[1], a.batch(0)[1])


def test_an_epoch_visits_every_image_once():
    task = make_task(dataset="synthetic", train_size=100, val_size=8, batch_size=30)
    seen = torch.cat([task.indices(t) for t in range(10)])  # 300 = 3 epochs, batches straddle them
    for epoch in range(3):
        assert sorted(seen[epoch * 100 : (epoch + 1) * 100].tolist()) == list(range(100))


def test_crop_flip_shifts_and_mirrors():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    centre = torch.tensor([2, 2])
    assert torch.equal(crop_flip(x, centre, centre, None, 2), x)
    assert torch.equal(crop_flip(x, centre, centre, torch.tensor([True, False]), 2), torch.stack([x[0].flip(-1), x[1]]))
    shifted = crop_flip(x, torch.tensor([0, 4]), torch.tensor([3, 2]), None, 2)
    assert torch.equal(shifted[0, :, 2:, :7], x[0, :, :6, 1:]) and shifted[0, :, :2].abs().sum() == 0
    assert torch.equal(shifted[1, :, :6, :], x[1, :, 2:, :])


def test_augmentation_crops_everywhere_and_flips_except_fashion_mnist(tmp_path):
    write_fashion(tmp_path)
    assert not make_task(dataset="fashion_mnist", data_dir=str(tmp_path)).flip
    assert make_task(dataset="synthetic", train_size=8, val_size=8).flip
    augmented = make_task(dataset="fashion_mnist", data_dir=str(tmp_path), batch_size=8)
    plain = make_task(dataset="fashion_mnist", data_dir=str(tmp_path), batch_size=8, augment=False)
    (xa, ya), (xp, yp) = augmented.batch(0), plain.batch(0)
    assert torch.equal(ya, yp) and xa.shape == xp.shape and not torch.equal(xa, xp)


# ---- models, roles, training -----------------------------------------------------------------
@pytest.mark.parametrize("model", ["fast", "resnet18"])
def test_every_parameter_has_one_role_and_matrices_are_matrices(model):
    task = make_task(dataset="synthetic", train_size=8, val_size=8, model=model, width=8)
    net = task.build_model()
    plan = plan_groups(net, MUON_ARM, task.param_roles(net))
    placed = [(name, role, p) for group in plan for name, role, p in group["params"]]
    assert sorted(n for n, _, _ in placed) == sorted(n for n, _ in net.named_parameters())
    roles = {n: r for n, r, _ in placed}
    assert roles["head.weight" if model == "fast" else "fc.weight"] == "head"
    norm_params = {f"{m}.{n}" for m, mod in net.named_modules() if isinstance(mod, torch.nn.BatchNorm2d) for n in ("weight", "bias")}
    for name, role, p in placed:
        assert (role == "matrix") == (p.ndim >= 2 and role != "head"), name
        if name in norm_params or name.endswith("bias"):
            assert role == "vector", name  # BatchNorm gains and biases
    muon_params = [n for g in plan if g["block"] == "main" for n, _, _ in g["params"]]
    assert all(roles[n] == "matrix" for n in muon_params)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_fast_width_sets_the_size():
    counts = {w: sum(p.numel() for p in make_task(dataset="synthetic", train_size=8, val_size=8, width=w).build_model().parameters())
              for w in (8, 32)}
    assert 1.4e6 < counts[32] < 1.8e6 and counts[32] / counts[8] == pytest.approx(16, rel=0.02)


def train(task: CifarResnet, steps: int) -> list[float]:
    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for t in range(steps):
        loss = task.loss(model, task.batch(t))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_fast_resnet_learns_fashion_mnist():
    task = make_task(dataset="fashion_mnist", train_size=512, val_size=200, batch_size=32, width=8)
    losses = train(task, 24)
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.3
    torch.manual_seed(0)
    model = task.build_model()
    model.eval()
    with torch.no_grad():
        metrics = task.evaluate(model)
    assert set(metrics) == {"val_loss", "val_acc"} and 0 <= metrics["val_acc"] <= 1
    assert metrics["val_loss"] == pytest.approx(np.log(10), abs=0.3)  # the 1/8 head scale: near-uniform start


def test_bf16_autocast_runs_on_cpu():
    task = make_task(dataset="synthetic", train_size=32, val_size=16, batch_size=8, width=4, amp="bf16")
    assert task.amp
    losses = train(task, 2)
    assert all(np.isfinite(losses))


def test_gpu_config_validates_and_builds_on_cpu(tmp_path, accept_test_files):
    write_cifar(tmp_path)
    cfg = load_config(ROOT / "configs" / "cifar_gpu.yaml", [f"task.data_dir={tmp_path}", "task.width=8", "device=cpu"])
    assert cfg.task.dataset == "cifar10"
    task = CifarResnet(cfg.task, cfg.seed, CPU)
    task.prepare()
    model = task.build_model()
    for arm in cfg.optimizers.values():
        plan_groups(model, arm, task.param_roles(model))
    assert torch.isfinite(task.loss(model, task.batch(0)))


@pytest.mark.parametrize("config", ["cifar_cpu", "cifar_gpu"])
def test_config_runs_two_steps_through_the_cli(tmp_path, config, accept_test_files):
    from typer.testing import CliRunner

    from trx.cli import app

    write_cifar(tmp_path / "data")
    sizes = ["task.train_size=32", "task.val_size=16", "task.batch_size=8", "task.eval_batch_size=8", "task.width=4"]
    if config == "cifar_gpu":
        sizes.append(f"task.data_dir={tmp_path / 'data'}")
    sets = ["steps=2", "optimizers.*.schedule.warmup=0", *sizes]
    args = ["run", str(ROOT / "configs" / f"{config}.yaml"), "--out", str(tmp_path / "runs"), "--device", "cpu"]
    res = CliRunner().invoke(app, args + [a for s in sets for a in ("--set", s)])
    assert res.exit_code == 0, res.output
    for arm in load_config(ROOT / "configs" / f"{config}.yaml").optimizers:
        summary = json.loads((tmp_path / "runs" / config / arm / "summary.json").read_text())
        assert summary["status"] == "complete" and summary["steps_done"] == 2 and summary["final_val_acc"] is not None
