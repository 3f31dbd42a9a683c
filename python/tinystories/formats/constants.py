"""Numbers the file formats, the engine and the training side must agree on, in one place.

The special token ids are the C engine's (``TS_TOKEN_*`` in ``tinystories.h``, exposed by
:mod:`tinystories._core`); sentencepiece's BPE trainer assigns the same ids by default,
which is why a vocabulary trained by :mod:`tinystories.training.vocab` runs in the engine.
"""

from __future__ import annotations

from .. import _core

UNK: int = _core.TOKEN_UNK  # <unk>: what a character missing from the vocabulary encodes to
BOS: int = _core.TOKEN_BOS  # <s>: starts every story; sampling it ends a generation
EOS: int = _core.TOKEN_EOS  # </s>
# In a vocabulary with byte fallback the 256 <0xXX> pieces follow the specials.
FIRST_BYTE_TOKEN: int = _core.TOKEN_FIRST_BYTE
N_BYTE_TOKENS: int = _core.TOKEN_BYTES
N_SPECIAL: int = FIRST_BYTE_TOKEN  # <unk>, <s>, </s>: ids below this print nothing special

# ``Generator(quantize=...)`` -> the engine's TS_QUANTIZE_* value.
QUANTIZE_OPTIONS: dict[str | None, int] = {
    None: _core.QUANTIZE_NONE,
    "q8_0": _core.QUANTIZE_Q8_0,
}

# Q8_0: the group size the engine's rule starts from, halved until it divides dim
# (see formats.llama2c.default_group_size): its answer for a dim every power of two divides.
MAX_GROUP_SIZE: int = _core.default_group_size(1 << 30)
