"""Tokenizers: the core's bytes, plus Hugging Face `tokenizers`, SentencePiece
and tiktoken files. The optional libraries are imported only when one is built."""

from zoo_core.tokenizers.byte import ByteTokenizer, ByteTokenizerConfig
from zoo_core.tokenizers.files import (
    HFTokenizer,
    HFTokenizerConfig,
    SentencePieceConfig,
    SentencePieceTokenizer,
    TiktokenConfig,
    TiktokenTokenizer,
)

__all__ = [
    "ByteTokenizer",
    "ByteTokenizerConfig",
    "HFTokenizer",
    "HFTokenizerConfig",
    "SentencePieceConfig",
    "SentencePieceTokenizer",
    "TiktokenConfig",
    "TiktokenTokenizer",
]
