"""The core's own defaults, registered through the same hooks as any plugin."""
from zoo_core import hookimpl
from zoo_core.blocks import PreNormBlock, PreNormBlockConfig
from zoo_core.data.corpus import CorpusConfig, CorpusSource
from zoo_core.data.mixture import MixtureConfig, MixtureSource
from zoo_core.data.mqar import MQARConfig, MQARSource
from zoo_core.losses import CrossEntropyConfig, CrossEntropyHead
from zoo_core.tokenizers import (ByteTokenizer, ByteTokenizerConfig, HFTokenizer, HFTokenizerConfig,
                                  SentencePieceConfig, SentencePieceTokenizer, TiktokenConfig, TiktokenTokenizer)

zoo_api = 1


@hookimpl
def register_blocks(register):
    register("prenorm", PreNormBlock, PreNormBlockConfig, "pre-norm residual block: RMSNorm, mixer, RMSNorm, SwiGLU MLP")


@hookimpl
def register_losses(register):
    register("cross_entropy", CrossEntropyHead, CrossEntropyConfig, "next-token cross-entropy, tied or untied unembedding")


@hookimpl
def register_tokenizers(register):
    register("bytes", ByteTokenizer, ByteTokenizerConfig, "UTF-8 bytes plus BOS/EOS/PAD (vocab 259)")
    register("hf", HFTokenizer, HFTokenizerConfig, "a Hugging Face tokenizers JSON file (path=tokenizer.json)")
    register("sentencepiece", SentencePieceTokenizer, SentencePieceConfig, "a SentencePiece model file (path=m.model)")
    register("tiktoken", TiktokenTokenizer, TiktokenConfig, "a tiktoken BPE ranks file (path=ranks.tiktoken, pattern=regex)")


@hookimpl
def register_data_sources(register):
    register("corpus", CorpusSource, CorpusConfig, "prepared token shards (or text/jsonl/parquet, prepared on first use) as parallel streams")
    register("mixture", MixtureSource, MixtureConfig, "several corpora sampled by weight (sources={dir: weight}), deterministic from the seed")
    register("mqar", MQARSource, MQARConfig, "synthetic multi-query associative recall (Zoology); accuracy is recall")
