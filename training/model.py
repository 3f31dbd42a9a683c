"""The Llama architecture exactly as the C engine computes it, in PyTorch.

RMSNorm (eps 1e-5), rotary position embeddings on interleaved pairs
(llama2.c's layout), grouped-query attention, a SwiGLU feed-forward block and
a classifier tied to the token embedding or not.

For speed the query/key/value projections are one matrix (``wqkv``) and so
are the two SwiGLU input projections (``w13``); :func:`to_numpy_weights` splits
them back into the model file's ``wq``/``wk``/``wv`` and ``w1``/``w3``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..formats.llama2c import ModelConfig, read_model
from .config import ModelArgs

_TORCH_VERSION = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
_HAS_RMS_NORM = hasattr(F, "rms_norm")
_HAS_GQA = _TORCH_VERSION >= (2, 5)  # scaled_dot_product_attention(enable_gqa=True)


def rope_tables(head_size: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin tables, shape (seq_len, 1, head_size), for :func:`apply_rope`.

    Pair i of a head, its entries (2i, 2i+1), turns by position * 10000^(-2i/head_size);
    ``cos`` repeats each angle's cosine twice, ``sin`` holds (-sin, +sin) per pair.
    """
    freqs = 1.0 / (10000.0 ** (torch.arange(0, head_size, 2).float() / head_size))
    angles = torch.outer(torch.arange(seq_len).float(), freqs)
    cos = torch.cos(angles).repeat_interleave(2, dim=-1)
    sin = torch.stack((-torch.sin(angles), torch.sin(angles)), dim=-1).flatten(-2)
    return cos[:, None, :], sin[:, None, :]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates each (even, odd) pair (a, b) of x (B, T, heads, head_size) to (ac - bs, as + bc)."""
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (b, a) for every pair
    return x * cos + swapped * sin


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x / sqrt(mean(x^2) + eps) * weight, as one kernel where torch has it
        if _HAS_RMS_NORM:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed * self.weight


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads = args.n_heads
        self.n_kv_heads = args.n_kv_heads
        self.head_size = args.head_size
        kv_dim = args.n_kv_heads * args.head_size
        self.wqkv = nn.Linear(args.dim, args.dim + 2 * kv_dim, bias=False)
        self.wo = nn.Linear(args.dim, args.dim, bias=False)
        self.dropout = args.dropout

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, seq, dim = x.shape
        n_qk = self.n_heads + self.n_kv_heads
        qkv = self.wqkv(x)
        # Rotations in fp32. Under CPU autocast the attention stays fp32 too: the CPU
        # flash-attention backward is several times slower in bf16 than in fp32.
        attention_dtype = torch.float32 if x.device.type == "cpu" else qkv.dtype
        qkv = qkv.float().view(batch, seq, n_qk + self.n_kv_heads, self.head_size)
        qk = apply_rope(qkv[:, :, :n_qk], cos, sin).to(attention_dtype)
        q = qk[:, :, : self.n_heads].transpose(1, 2)
        k = qk[:, :, self.n_heads :].transpose(1, 2)
        v = qkv[:, :, n_qk:].to(attention_dtype).transpose(1, 2)
        if x.device.type == "cpu":
            with torch.autocast("cpu", enabled=False):
                out = self._attend(q, k, v)
        else:
            out = self._attend(q, k, v)
        return self.wo(out.transpose(1, 2).reshape(batch, seq, dim))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        dropout = self.dropout if self.training else 0.0
        if self.n_kv_heads == self.n_heads:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        if _HAS_GQA:  # query head h reads key/value head h // (n_heads / n_kv_heads)
            return F.scaled_dot_product_attention(
                q, k, v, dropout_p=dropout, is_causal=True, enable_gqa=True
            )
        n_rep = self.n_heads // self.n_kv_heads
        k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.w13 = nn.Linear(dim, 2 * hidden_dim, bias=False)  # w1 (gate) then w3 (up)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.attention = Attention(args)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        self.feed_forward = FeedForward(args.dim, args.ffn_dim)
        self.dropout = nn.Dropout(args.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = x + self.dropout(self.attention(self.attention_norm(x), cos, sin))
        return h + self.dropout(self.feed_forward(self.ffn_norm(h)))


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.shared_classifier:
            self.output.weight = self.tok_embeddings.weight
        cos, sin = rope_tables(args.head_size, args.seq_len)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2 style: N(0, 0.02), residual output projections scaled by depth.
        residual_std = 0.02 / math.sqrt(2 * self.args.n_layers)
        for name, param in self.named_parameters():
            if name.endswith("norm.weight"):
                continue
            std = residual_std if name.endswith(("wo.weight", "w2.weight")) else 0.02
            nn.init.normal_(param, mean=0.0, std=std)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, vocab) for tokens (B, T), T <= seq_len."""
        seq = tokens.shape[1]
        if seq > self.args.seq_len:
            raise ValueError(f"{seq} tokens do not fit the context of {self.args.seq_len}")
        cos, sin = self.rope_cos[:seq], self.rope_sin[:seq]
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h, cos, sin)
        return self.output(self.norm(h))

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of next-token predictions."""
        logits = self(tokens)
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    @torch.no_grad()
    def generate_greedy(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """Argmax continuation (no cache; for tests and small checks)."""
        tokens = list(ids)
        device = self.rope_cos.device
        for _ in range(max_new_tokens):
            if len(tokens) >= self.args.seq_len:
                break
            logits = self(torch.tensor([tokens], device=device))[0, -1]
            tokens.append(int(logits.argmax()))
        return tokens


# --- conversion to and from the model file's NumPy arrays ---------------------


def to_numpy_weights(model: Transformer) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """fp32 arrays named and shaped as ``ModelConfig.shapes()`` wants them."""
    args = model.args
    config = args.file_config()
    dim, kv_dim, hidden = args.dim, args.n_kv_heads * args.head_size, args.ffn_dim

    def array(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    def stacked(get) -> np.ndarray:
        return np.stack([array(get(layer)) for layer in model.layers])

    wqkv = stacked(lambda layer: layer.attention.wqkv.weight)
    w13 = stacked(lambda layer: layer.feed_forward.w13.weight)
    weights = {
        "token_embedding": array(model.tok_embeddings.weight),
        "rms_att": stacked(lambda layer: layer.attention_norm.weight),
        "wq": wqkv[:, :dim],
        "wk": wqkv[:, dim : dim + kv_dim],
        "wv": wqkv[:, dim + kv_dim :],
        "wo": stacked(lambda layer: layer.attention.wo.weight),
        "rms_ffn": stacked(lambda layer: layer.ffn_norm.weight),
        "w1": w13[:, :hidden],
        "w2": stacked(lambda layer: layer.feed_forward.w2.weight),
        "w3": w13[:, hidden:],
        "rms_final": array(model.norm.weight),
    }
    if not args.shared_classifier:
        weights["wcls"] = array(model.output.weight)
    return config, weights


def from_numpy_weights(config: ModelConfig, weights: dict[str, np.ndarray]) -> Transformer:
    """A Transformer holding ``weights`` (as read by ``formats.llama2c.read_model``)."""
    model = Transformer(ModelArgs.of_file(config))
    load_numpy_weights(model, weights)
    return model


def load_numpy_weights(model: Transformer, weights: dict[str, np.ndarray]) -> None:
    """Copies a model file's ``weights`` into ``model``, whose shape must be theirs (its
    ``seq_len`` may differ: the rotary tables are the model's own)."""

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    with torch.no_grad():
        model.tok_embeddings.weight.copy_(t(weights["token_embedding"]))
        model.norm.weight.copy_(t(weights["rms_final"]))
        for i, layer in enumerate(model.layers):
            qkv = np.concatenate([weights["wq"][i], weights["wk"][i], weights["wv"][i]])
            layer.attention.wqkv.weight.copy_(t(qkv))
            layer.attention.wo.weight.copy_(t(weights["wo"][i]))
            layer.attention_norm.weight.copy_(t(weights["rms_att"][i]))
            layer.ffn_norm.weight.copy_(t(weights["rms_ffn"][i]))
            w13 = np.concatenate([weights["w1"][i], weights["w3"][i]])
            layer.feed_forward.w13.weight.copy_(t(w13))
            layer.feed_forward.w2.weight.copy_(t(weights["w2"][i]))
        if not model.args.shared_classifier:
            model.output.weight.copy_(t(weights["wcls"]))


def load_model_file(path: str | Path) -> Transformer:
    """A Transformer from a llama2.c model file (v0, v1, or v2 dequantized)."""
    config, _version, weights = read_model(path)
    return from_numpy_weights(config, weights).eval()


def with_vocab_size(args: ModelArgs, vocab_size: int) -> ModelArgs:
    return replace(args, vocab_size=vocab_size)
