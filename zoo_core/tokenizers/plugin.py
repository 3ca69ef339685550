"""The core's tokenizers: a default plugin (zoo_core.registry.DEFAULT_PLUGINS)."""

from zoo_core import hookimpl
from zoo_core.tokenizers import (
    ByteTokenizer,
    ByteTokenizerConfig,
    HFTokenizer,
    HFTokenizerConfig,
    SentencePieceConfig,
    SentencePieceTokenizer,
    TiktokenConfig,
    TiktokenTokenizer,
)

zoo_api = 1


@hookimpl
def register_tokenizers(register):
    register("bytes", ByteTokenizer, ByteTokenizerConfig, "UTF-8 bytes plus BOS/EOS/PAD (vocab 259)")
    register("hf", HFTokenizer, HFTokenizerConfig, "a Hugging Face tokenizers JSON file (path=tokenizer.json)")
    register("sentencepiece", SentencePieceTokenizer, SentencePieceConfig, "a SentencePiece model file (path=m.model)")
    register(
        "tiktoken", TiktokenTokenizer, TiktokenConfig, "a tiktoken BPE ranks file (path=ranks.tiktoken, pattern=regex)"
    )
