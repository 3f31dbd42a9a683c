"""An independent NumPy forward pass of the llama2.c architecture, for tests.

Written from the architecture (RMSNorm, RoPE, grouped-query attention,
SwiGLU), not from the C engine. With ``quantize_activations`` it also rounds
every matmul input to Q8_0 groups, as llama2.c's runq does for v2 files.
"""

from __future__ import annotations

import numpy as np
from tinystories.model_file import ModelConfig


def rmsnorm(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return weight * (x / np.sqrt(np.mean(x * x) + 1e-5))


def quantize_roundtrip(x: np.ndarray, group_size: int) -> np.ndarray:
    groups = x.reshape(-1, group_size)
    scale = np.abs(groups).max(axis=1, keepdims=True) / 127.0
    safe = np.where(scale == 0, 1.0, scale)
    # C's round(): halves away from zero
    q = np.sign(groups / safe) * np.floor(np.abs(groups / safe) + 0.5)
    return (q * scale).reshape(x.shape)


def forward(
    config: ModelConfig, w: dict[str, np.ndarray], tokens: list[int], quantize_activations: int = 0
) -> np.ndarray:
    """Logits after each token, shape [len(tokens), vocab], computed in float64."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    hs, n_heads, n_kv = config.head_size, config.n_heads, config.n_kv_heads
    group = n_heads // n_kv
    cache_k = np.zeros((config.n_layers, len(tokens), config.kv_dim))
    cache_v = np.zeros_like(cache_k)

    def mm(matrix: np.ndarray, x: np.ndarray) -> np.ndarray:
        if quantize_activations:
            x = quantize_roundtrip(x, quantize_activations)
        return matrix @ x

    freqs = 1.0 / 10000.0 ** (np.arange(0, hs, 2) / hs)
    out = []
    for pos, token in enumerate(tokens):
        angle = pos * freqs
        cos, sin = np.cos(angle), np.sin(angle)

        def rope(v: np.ndarray, cos: np.ndarray = cos, sin: np.ndarray = sin) -> np.ndarray:
            pairs = v.reshape(-1, hs // 2, 2)
            a, b = pairs[..., 0], pairs[..., 1]
            return np.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(v.shape)

        x = w["token_embedding"][token].copy()
        for layer in range(config.n_layers):
            h = rmsnorm(x, w["rms_att"][layer])
            q = rope(mm(w["wq"][layer], h))
            cache_k[layer, pos] = rope(mm(w["wk"][layer], h))
            cache_v[layer, pos] = mm(w["wv"][layer], h)
            attended = np.empty(config.dim)
            for head in range(n_heads):
                kv = head // group
                qh = q[head * hs : (head + 1) * hs]
                keys = cache_k[layer, : pos + 1, kv * hs : (kv + 1) * hs]
                values = cache_v[layer, : pos + 1, kv * hs : (kv + 1) * hs]
                scores = keys @ qh / np.sqrt(hs)
                p = np.exp(scores - scores.max())
                attended[head * hs : (head + 1) * hs] = (p / p.sum()) @ values
            x = x + mm(w["wo"][layer], attended)
            h = rmsnorm(x, w["rms_ffn"][layer])
            gate = mm(w["w1"][layer], h)
            hidden = gate / (1.0 + np.exp(-gate)) * mm(w["w3"][layer], h)
            x = x + mm(w["w2"][layer], hidden)
        x = rmsnorm(x, w["rms_final"])
        classifier = w["token_embedding"] if config.shared_classifier else w["wcls"]
        out.append(mm(classifier, x))
    return np.array(out, dtype=np.float32)
