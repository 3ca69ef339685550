"""Tokenizers read from a file: Hugging Face `tokenizers` JSON, SentencePiece
models and tiktoken BPE ranks.

Each one's `fingerprint` hashes the file's bytes and the options that change
the ids, so prepared data made with another file (or another EOS) is refused.
The libraries are optional (`pip install 'zoo-core[data]'`) and imported here
only when a tokenizer is built. Instances pickle as their config, so
`zoo data prepare` can rebuild them in worker processes.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo_core.errors import UserError, require  # noqa: F401  (zoo_core.tokenizers.files.require is used by plugins)
from zoo_core.interfaces import Tokenizer

#: cl100k_base's pre-tokenizer regex (tiktoken's default for GPT-4-era BPEs).
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
#: End-of-document tokens looked for, in order, when the config names none.
EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "<|eot_id|>", "[SEP]")
BOS_NAMES = ("<s>", "<bos>", "<|begin_of_text|>", "[CLS]")


def _file(kind: str, path: str, example: str) -> Path:
    if not path:
        raise UserError(
            f"tokenizer '{kind}' needs a file: set data.tokenizer.path={example} (or --tokenizer {kind}:{example})"
        )
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"tokenizer file '{path}' does not exist; give the path to a {kind} {example} file")
    return p


class FileTokenizer(Tokenizer):
    kind = ""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.path = _file(self.kind, config.path, self.example)
        self._raw = self.path.read_bytes()
        options = {k: v for k, v in dataclasses.asdict(config).items() if k != "path"}
        h = hashlib.sha256(self._raw)
        h.update(json.dumps(options, sort_keys=True).encode())
        self._fingerprint = f"{self.kind}-{h.hexdigest()[:16]}"
        self.bos_id: int | None = None
        self.eos_id: int | None = None

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def _extra_eos(self, base_vocab: int) -> None:
        """No EOS in the vocabulary: add one id past it, used only as a document separator."""
        self.eos_id = base_vocab
        self.vocab_size = base_vocab + 1

    def __reduce__(self):
        return (type(self), (self.config,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"


# -- Hugging Face tokenizers ----------------------------------------------------------


@dataclass
class HFTokenizerConfig:
    #: A `tokenizers` JSON file (tokenizer.json, or one written by `zoo tokenizer train`).
    path: str = ""
    #: The end-of-document token; default: the first of <|endoftext|>, </s>, <eos>, ... it has.
    eos: str | None = None


class HFTokenizer(FileTokenizer):
    kind, example = "hf", "tokenizer.json"

    def __init__(self, config: HFTokenizerConfig) -> None:
        super().__init__(config)
        lib = require("tokenizers", "the 'hf' tokenizer")
        try:
            self.tok = lib.Tokenizer.from_str(self._raw.decode("utf-8"))
        except Exception as exc:
            raise UserError(
                f"'{self.path}' is not a Hugging Face tokenizers JSON file ({str(exc).splitlines()[0][:120]})"
            ) from None
        # A literal "<|endoftext|>" in a document is ordinary text, never a separator.
        self.tok.encode_special_tokens = True
        vocab = self.tok.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values()) + 1  # ids may have gaps: size by the largest
        if config.eos is not None:
            if config.eos not in vocab:
                raise UserError(f"data.tokenizer.eos='{config.eos}' is not in the vocabulary of '{self.path}'")
            self.eos_id = vocab[config.eos]
        else:
            self.eos_id = next((vocab[t] for t in EOS_NAMES if t in vocab), None)
        self.bos_id = next((vocab[t] for t in BOS_NAMES if t in vocab), None)
        self._base = self.vocab_size
        if self.eos_id is None:
            self._extra_eos(self.vocab_size)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode([int(i) for i in ids if 0 <= i < self._base], skip_special_tokens=True)


# -- SentencePiece ---------------------------------------------------------------------


@dataclass
class SentencePieceConfig:
    #: A SentencePiece model file (m.model).
    path: str = ""


class SentencePieceTokenizer(FileTokenizer):
    kind, example = "sentencepiece", "m.model"

    def __init__(self, config: SentencePieceConfig) -> None:
        super().__init__(config)
        spm = require("sentencepiece", "the 'sentencepiece' tokenizer")
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(self._raw)
        except Exception:
            raise UserError(f"'{self.path}' is not a SentencePiece model file") from None
        self.vocab_size = self.sp.get_piece_size()
        self.bos_id = self.sp.bos_id() if self.sp.bos_id() >= 0 else None
        self.eos_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else None
        self._base = self.vocab_size
        if self.eos_id is None:
            self._extra_eos(self.vocab_size)

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text, out_type=int)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids if 0 <= i < self._base])


# -- tiktoken ----------------------------------------------------------------------------


@dataclass
class TiktokenConfig:
    #: A BPE ranks file: one `base64(token bytes) rank` per line (tiktoken's format).
    path: str = ""
    #: The pre-tokenizer regex; default: cl100k_base's.
    pattern: str = CL100K_PATTERN
    #: The end-of-document token, given the id after the highest rank.
    eos: str = "<|endoftext|>"


def read_ranks(path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except Exception:
                raise UserError(
                    f"{path}:{n} is not 'base64-token rank'; a tiktoken ranks file has one per line"
                ) from None
    if not ranks:
        raise UserError(f"tiktoken ranks file '{path}' is empty")
    return ranks


class TiktokenTokenizer(FileTokenizer):
    kind, example = "tiktoken", "ranks.tiktoken"

    def __init__(self, config: TiktokenConfig) -> None:
        super().__init__(config)
        tiktoken = require("tiktoken", "the 'tiktoken' tokenizer")
        ranks = read_ranks(self.path)
        missing = 256 - sum(1 for i in range(256) if bytes([i]) in ranks)
        if missing:
            raise UserError(
                f"tiktoken ranks file '{self.path}' lacks {missing} of the 256 single bytes; "
                f"a byte-level BPE needs them all to encode any text"
            )
        self.eos_id = max(ranks.values()) + 1
        try:
            self.enc = tiktoken.Encoding(
                f"zoo-{self.fingerprint}",
                pat_str=config.pattern,
                mergeable_ranks=ranks,
                special_tokens={config.eos: self.eos_id},
            )
        except Exception as exc:
            raise UserError(
                f"could not build a tiktoken encoding from '{self.path}' "
                f"(check data.tokenizer.pattern): {str(exc).splitlines()[0][:120]}"
            ) from None
        self.vocab_size = self.eos_id + 1

    def encode(self, text: str) -> list[int]:
        # Ordinary text only: a literal "<|endoftext|>" in a document is not a separator.
        return self.enc.encode_ordinary(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.enc.decode([int(i) for i in ids if 0 <= i < self.eos_id], errors="replace")
