"""The core's tokenizers: a default plugin (zoo_core.registry.DEFAULT_PLUGINS)."""

from zoo_core import hookimpl
from zoo_core import tokenizers as t

zoo_api = 1


@hookimpl
def register_tokenizers(register):
    register("bytes", t.ByteTokenizer, t.ByteTokenizerConfig, "UTF-8 bytes plus BOS/EOS/PAD (vocab 259)")
    register("hf", t.HFTokenizer, t.HFTokenizerConfig, "a Hugging Face tokenizers JSON file (path=tokenizer.json)")
    register(
        "sentencepiece", t.SentencePieceTokenizer, t.SentencePieceConfig, "a SentencePiece model file (path=m.model)"
    )
    register(
        "tiktoken",
        t.TiktokenTokenizer,
        t.TiktokenConfig,
        "a tiktoken BPE ranks file (path=ranks.tiktoken, pattern=regex)",
    )
