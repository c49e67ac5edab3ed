"""Resume, parameter roles and groups, gradient clipping, and p.grad left untouched."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trx.optim import FILTERS, NORMALIZERS, build_optimizer, default_roles, plan_groups

FILTER_CFGS = {
    "none": "none",
    "heavy_ball": {"name": "heavy_ball", "beta": 0.9, "gamma": 0.5},
    "nesterov": {"name": "nesterov", "beta": 0.9},
    "ema": {"name": "ema", "beta": 0.9},
    "iir": {"name": "iir", "b": [0.2, 0.1], "a": [1.0, -1.2, 0.36]},
}


def normalizer_cfgs() -> dict[str, dict]:
    """Every registered normalizer with float32 Newton–Schulz where it has one (deterministic)."""
    out = {}
    for name, cls in NORMALIZERS.items():
        cfg = {"name": name}
        if "dtype" in cls.model_fields:
            cfg["dtype"] = "float32"
        out[name] = cfg
    return out


# Every filter (with adam) and every normalizer (with a stateful filter): each stage resumes.
PAIRS = sorted({(f, "adam") for f in FILTERS} | {("iir" if n == "identity" else "ema", n) for n in NORMALIZERS})


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.lin = nn.Linear(6, 6)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 10, bias=False)

    def forward(self, idx):
        return self.head(self.norm(torch.tanh(self.lin(self.emb(idx)))))


def loss_of(model: Net, t: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(t)
    idx = torch.randint(0, 10, (16,), generator=gen)
    target = torch.randint(0, 10, (16,), generator=gen)
    return nn.functional.cross_entropy(model(idx), target)


def arm(filter_cfg, normalizer_cfg) -> dict:
    return {
        "lr": 0.01,
        "filter": filter_cfg,
        "normalizer": normalizer_cfg,
        "weight_decay": {"value": 0.01, "mode": "coupled", "exclude": ["vector"]},
        "schedule": {"name": "cosine", "warmup": 3},
        "aux": {"lr_scale": 0.5, "weight_decay": {"value": 0.01, "mode": "decoupled"}},
    }


def run(model, opt, steps: range) -> None:
    for t in steps:
        opt.zero_grad()
        loss_of(model, t).backward()
        opt.step()


@pytest.mark.parametrize("filter_name, normalizer_name", PAIRS)
def test_loaded_optimizer_continues_bit_identically(filter_name, normalizer_name):
    torch.manual_seed(0)
    cfg = arm(FILTER_CFGS[filter_name], normalizer_cfgs()[normalizer_name])
    model = Net()
    opt = build_optimizer(model, cfg, total_steps=20, grad_clip=1.0)
    run(model, opt, range(6))
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    run(model, opt, range(6, 12))

    torch.manual_seed(123)  # the fresh model's own init must not matter
    resumed = Net()
    resumed.load_state_dict(saved_model)
    opt2 = build_optimizer(resumed, cfg, total_steps=20, grad_clip=1.0)
    opt2.load_state_dict(saved_opt)
    assert [g["step"] for g in opt2.param_groups] == [6] * len(opt2.param_groups)
    run(resumed, opt2, range(6, 12))
    for (name, p), q in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name
    assert opt2.current_lr() == opt.current_lr()


def test_filter_cfgs_cover_the_registry():
    assert set(FILTER_CFGS) == set(FILTERS)


def test_roles_from_module_types():
    roles = default_roles(Net())
    assert roles == {
        "emb.weight": "embedding",
        "lin.weight": "matrix",
        "lin.bias": "vector",
        "norm.weight": "vector",
        "norm.bias": "vector",
        "head.weight": "matrix",
    }


def test_muon_sends_embeddings_and_vectors_to_aux_and_roles_override():
    cfg = {"lr": 0.02, "normalizer": {"name": "muon", "dtype": "float32"}, "aux": {"lr_scale": 0.1}}
    groups = {g["name"]: g["names"] for g in build_optimizer(Net(), cfg, total_steps=5).param_groups}
    assert sorted(groups["main"]) == ["head.weight", "lin.weight"]
    assert sorted(groups["aux"]) == ["emb.weight"]
    assert sorted(groups["aux/no_decay"]) == ["lin.bias", "norm.bias", "norm.weight"]
    opt = build_optimizer(Net(), cfg, total_steps=5, roles={"head.weight": "head", "emb.weight": "matrix"})
    groups = {g["name"]: g for g in opt.param_groups}
    assert sorted(groups["main"]["names"]) == ["emb.weight", "lin.weight"]
    assert groups["aux"]["names"] == ["head.weight"]
    assert groups["aux"]["base_lr"] == pytest.approx(0.002)


def test_weight_decay_exclude_by_role():
    cfg = {"lr": 0.1, "weight_decay": {"value": 0.1, "exclude": ["vector", "embedding"]}}
    groups = {g["name"]: g for g in build_optimizer(Net(), cfg, total_steps=5).param_groups}
    assert sorted(groups["main"]["names"]) == ["head.weight", "lin.weight"] and groups["main"]["weight_decay"] == 0.1
    assert "emb.weight" in groups["main/no_decay"]["names"] and groups["main/no_decay"]["weight_decay"] == 0.0


def test_frozen_parameters_are_left_out_and_tied_ones_counted_once():
    model = Net()
    model.head.weight = model.emb.weight  # tied (10, 6)
    model.norm.weight.requires_grad_(False)
    plan = plan_groups(model, {"lr": 0.1})
    names = [n for g in plan for n, _, _ in g["params"]]
    assert "norm.weight" not in names
    assert names.count("emb.weight") == 1 and "head.weight" not in names
    ids = [id(p) for g in plan for _, _, p in g["params"]]
    assert len(ids) == len(set(ids)) == len([p for p in model.parameters() if p.requires_grad])
    # the same from (name, parameter) pairs, with the tied parameter listed twice
    pairs = [("a", model.emb.weight), ("b", model.emb.weight), ("c", model.lin.weight)]
    plan = plan_groups(pairs, {"lr": 0.1})
    assert [n for g in plan for n, _, _ in g["params"]] == ["a", "c"]


def test_every_parameter_in_exactly_one_group():
    cfg = {"lr": 0.02, "normalizer": {"name": "muon", "dtype": "float32"}, "aux": {}, "weight_decay": 0.1}
    opt = build_optimizer(Net(), cfg, total_steps=5)
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(Net().parameters()))


def test_grad_clip_scales_the_step_and_leaves_p_grad_alone():
    torch.manual_seed(0)
    model = Net()
    ref = copy.deepcopy(model)
    opt = build_optimizer(model, {"lr": 0.1}, total_steps=5, grad_clip=0.05)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for t in range(3):
        for m, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad()
            loss_of(m, t).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.05)
        assert norm > 0.05  # the clip is active
        opt.diagnose = True
        opt.step()
        ref_opt.step()
        assert opt.diagnostics["grad_norm"] == pytest.approx(float(norm), rel=1e-5)
        assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
        for p, q in zip(model.parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-7)


@pytest.mark.parametrize("filter_name, normalizer_name", PAIRS)
def test_p_grad_is_never_modified(filter_name, normalizer_name):
    torch.manual_seed(0)
    model = Net()
    opt = build_optimizer(model, arm(FILTER_CFGS[filter_name], normalizer_cfgs()[normalizer_name]), total_steps=10)
    for t in range(3):
        opt.zero_grad()
        loss_of(model, t).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        opt.diagnose = t == 1
        opt.step()
        assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))


def test_parameters_without_grad_are_skipped_but_counted():
    model = Net()
    opt = build_optimizer(model, {"lr": 0.1, "filter": "ema", "normalizer": "adam"}, total_steps=5)
    before = model.lin.weight.detach().clone()
    loss_of(model, 0).backward()
    model.lin.weight.grad = None
    opt.step()
    assert torch.equal(model.lin.weight, before)
    assert opt.param_groups[0]["step"] == 1


@pytest.mark.parametrize("normalizer", ["normuon", "trasmuon"])
def test_bf16_model_keeps_float32_state_through_a_checkpoint(normalizer):
    """torch's load_state_dict casts state to the parameter dtype; trx keeps what was saved, so a
    resumed bf16 run keeps float32 statistics and takes the uninterrupted run's next step exactly."""
    import io

    torch.manual_seed(0)
    cfg = {"lr": 0.01, "filter": {"name": "ema", "beta": 0.9, "bias_correction": False},
           "normalizer": {"name": normalizer, "dtype": "float32"}, "aux": {}}
    model = Net().to(torch.bfloat16)
    opt = build_optimizer(model, cfg, total_steps=10)
    run(model, opt, range(3))
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    resumed = Net().to(torch.bfloat16)
    resumed.load_state_dict(ckpt["model"])
    opt2 = build_optimizer(resumed, cfg, total_steps=10)
    opt2.load_state_dict(ckpt["optimizer"])
    for p, q in zip(model.parameters(), resumed.parameters()):
        a, b = opt.state[p], opt2.state[q]
        assert set(a) == set(b)
        for key in a:
            assert b[key].dtype == a[key].dtype, (key, b[key].dtype)
    assert any(v.dtype == torch.float32 for st in opt2.state.values() for v in st.values())
    run(model, opt, range(3, 5))
    run(resumed, opt2, range(3, 5))
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
