"""Train a byte-level BPE offline with Hugging Face `tokenizers` (`zoo tokenizer
train`), and export it as a tiktoken ranks file.

Byte-level means every byte is in the base vocabulary, so any text encodes
and decodes back exactly; documents are streamed, so memory holds the
pre-token counts, not the corpus.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

from zoo_core.data.corpora import iter_texts, source_files
from zoo_core.errors import UserError
from zoo_core.tokenizers.files import require

EOS = "<|endoftext|>"


def train_bpe(
    sources: Sequence[str], vocab_size: int, out: Path, text_field: str = "text", min_frequency: int = 2
) -> Path:
    """Train on the documents of `sources` (files, directories or named corpora); write `out` (JSON)."""
    lib = require("tokenizers", "zoo tokenizer train")
    if vocab_size < 257 + 1:
        raise UserError(
            f"--vocab {vocab_size} is too small: a byte-level BPE has 256 byte tokens and {EOS}; "
            f"use at least 258 (a few thousand is usual)"
        )
    files: list[Path] = [f for s in sources for f in source_files(s)]
    tok = lib.Tokenizer(lib.models.BPE())
    tok.pre_tokenizer = lib.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = lib.decoders.ByteLevel()
    trainer = lib.trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS],
        initial_alphabet=lib.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(iter_texts(files, text_field), trainer=trainer)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tok.save(str(tmp))
    tmp.replace(out)
    return out


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-ins for the 256 bytes, which byte-level BPE vocabularies are written in."""
    keep = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def export_tiktoken(json_path: Path, out: Path) -> Path:
    """A tiktoken ranks file from a byte-level BPE JSON: tokens ranked in id order (bytes, then merges)."""
    lib = require("tokenizers", "exporting a tiktoken ranks file")
    tok = lib.Tokenizer.from_file(str(json_path))
    to_byte = {c: b for b, c in byte_to_unicode().items()}
    vocab = sorted(tok.get_vocab(with_added_tokens=False).items(), key=lambda kv: kv[1])
    specials = {t.content for t in tok.get_added_tokens_decoder().values()}
    lines = []
    for text, _ in vocab:
        if text in specials:
            continue
        try:
            raw = bytes(to_byte[c] for c in text)
        except KeyError:
            raise UserError(
                f"'{json_path}' is not a byte-level BPE (token {text!r}); only those export to tiktoken"
            ) from None
        lines.append(f"{base64.b64encode(raw).decode()} {len(lines)}")
    out = Path(out)
    out.write_text("\n".join(lines) + "\n")
    return out
