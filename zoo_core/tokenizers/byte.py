"""The core's byte tokenizer: 256 byte values plus special tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from zoo_core.interfaces import Tokenizer


@dataclass
class ByteTokenizerConfig:
    pass


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes are ids 0-255; BOS=256, EOS=257, PAD=258."""

    def __init__(self, config: ByteTokenizerConfig | None = None) -> None:
        self.bos_id, self.eos_id, self.pad_id = 256, 257, 258
        self.vocab_size = 259

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_array(self, text: str) -> np.ndarray:
        """`encode` as an array without a Python list: what `zoo data prepare` uses."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    @property
    def fingerprint(self) -> str:
        return "bytes-v1"
