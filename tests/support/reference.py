"""An independent NumPy forward pass of the llama2.c architecture, for tests.

Written from the architecture (RMSNorm, RoPE, grouped-query attention,
SwiGLU), not from the C engine. With ``quantize_activations`` it also rounds
every matmul input to Q8_0 groups, as llama2.c's runq does for v2 files.
"""

from __future__ import annotations

import numpy as np
from tinystories.formats.llama2c import ModelConfig, QuantizedTensor


def rmsnorm(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return weight * (x / np.sqrt(np.mean(x * x) + 1e-5))


def quantize(x: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Q8_0 of x's whole groups, rounding decided in float32 as the engine does.

    Also says whether a value sat so close to a rounding boundary that float32
    noise between two correct implementations may round it differently.
    """
    n = x.size // group_size * group_size
    groups = x[:n].astype(np.float32).reshape(-1, group_size)
    scale = np.abs(groups).max(axis=1) / np.float32(127.0)
    ratio = (groups / np.where(scale == 0, np.float32(1.0), scale)[:, None]).astype(np.float64)
    q = np.sign(ratio) * np.floor(np.abs(ratio) + 0.5)  # C's round(): halves away from zero
    ambiguous = bool(np.any(np.abs(np.abs(ratio) % 1.0 - 0.5) < 3e-5))
    return q, scale.astype(np.float64), ambiguous


def q8_matmul(matrix: QuantizedTensor, x: np.ndarray) -> tuple[np.ndarray, bool]:
    """llama2.c runq's Q8_0 matmul: whole input groups only, scales indexed over the
    flattened matrix (a group may straddle two rows when the group size does not
    divide the row length)."""
    d, n = matrix.shape
    gs = matrix.group_size
    xq, xs, ambiguous = quantize(x, gs)
    out = np.zeros(d)
    values = matrix.values.astype(np.float64)
    for g in range(n // gs):
        starts = np.arange(d) * n + g * gs
        dots = np.stack([values[s : s + gs] for s in starts]) @ xq[g]
        out += dots * matrix.scales[starts // gs].astype(np.float64) * xs[g]
    return out, ambiguous


def forward(config: ModelConfig, w: dict, tokens: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Logits after each token, shape [len(tokens), vocab], computed in float64.

    ``w`` holds fp32 arrays, or for a v2 file what ``read_model(path,
    keep_quantized=True)`` gives: matrices as QuantizedTensor, multiplied with
    runq's int8 activations. Also returns, per position, whether a Q8 rounding
    there was ambiguous (always False for fp32).
    """
    quantized = isinstance(w["token_embedding"], QuantizedTensor)
    w = {
        k: v if isinstance(v, (list, QuantizedTensor)) else v.astype(np.float64)
        for k, v in w.items()
    }
    if quantized:
        w["token_embedding_f"] = w["token_embedding"].dequantize().astype(np.float64)
    else:
        w["token_embedding_f"] = w["token_embedding"]
    hs, n_heads, n_kv = config.head_size, config.n_heads, config.n_kv_heads
    group = n_heads // n_kv
    cache_k = np.zeros((config.n_layers, len(tokens), config.kv_dim))
    cache_v = np.zeros_like(cache_k)
    ambiguous = np.zeros(len(tokens), dtype=bool)

    def mm(matrix, x: np.ndarray, pos: int) -> np.ndarray:
        if not quantized:
            return matrix @ x
        out, unsure = q8_matmul(matrix, x)
        ambiguous[pos] |= unsure
        return out

    freqs = 1.0 / 10000.0 ** (np.arange(0, hs, 2) / hs)
    out = []
    for pos, token in enumerate(tokens):
        angle = pos * freqs
        cos, sin = np.cos(angle), np.sin(angle)

        def rope(v: np.ndarray, cos: np.ndarray = cos, sin: np.ndarray = sin) -> np.ndarray:
            pairs = v.reshape(-1, hs // 2, 2)
            a, b = pairs[..., 0], pairs[..., 1]
            return np.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(v.shape)

        x = w["token_embedding_f"][token].copy()
        for layer in range(config.n_layers):
            h = rmsnorm(x, w["rms_att"][layer])
            q = rope(mm(w["wq"][layer], h, pos))
            cache_k[layer, pos] = rope(mm(w["wk"][layer], h, pos))
            cache_v[layer, pos] = mm(w["wv"][layer], h, pos)
            attended = np.empty(config.dim)
            for head in range(n_heads):
                kv = head // group
                qh = q[head * hs : (head + 1) * hs]
                keys = cache_k[layer, : pos + 1, kv * hs : (kv + 1) * hs]
                values = cache_v[layer, : pos + 1, kv * hs : (kv + 1) * hs]
                scores = keys @ qh / np.sqrt(hs)
                p = np.exp(scores - scores.max())
                attended[head * hs : (head + 1) * hs] = (p / p.sum()) @ values
            x = x + mm(w["wo"][layer], attended, pos)
            h = rmsnorm(x, w["rms_ffn"][layer])
            gate = mm(w["w1"][layer], h, pos)
            hidden = gate / (1.0 + np.exp(-gate)) * mm(w["w3"][layer], h, pos)
            x = x + mm(w["w2"][layer], hidden, pos)
        x = rmsnorm(x, w["rms_final"])
        classifier = w["token_embedding"] if config.shared_classifier else w["wcls"]
        out.append(mm(classifier, x, pos))
    return np.array(out, dtype=np.float32), ambiguous
