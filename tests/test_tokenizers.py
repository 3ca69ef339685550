"""Tokenizers: every registered kind round-trips text; files are fingerprinted by
content; missing files, bad files and missing libraries get one clear line."""

import json
import pickle
import shutil
import sys

import pytest

from zoo_core.cli import main
from zoo_core.commands.tokenizer import tokenizer_from_spec
from zoo_core.data.synthetic import write_corpus
from zoo_core.errors import UserError
from zoo_core.registry import get_registry

SAMPLES = [
    "Hello, world!\n",
    "  two  spaces\tand a tab\n\n\nparagraphs ",
    "héllo wörld — naïve café",
    "漢字とかな 🙂 mixed with ascii",
    "a",
    "<|endoftext|> is ordinary text here",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny generated corpus, a byte-level BPE trained on it (with its tiktoken
    export) and a SentencePiece model, all trained offline."""
    root = tmp_path_factory.mktemp("tok")
    corpus = write_corpus(root / "corpus", 60_000, kinds=("text", "jsonl"))
    tok_json, ranks = root / "bpe.json", root / "bpe.tiktoken"
    assert (
        main(["tokenizer", "train", "--vocab", "400", str(corpus), "--out", str(tok_json), "--tiktoken", str(ranks)])
        == 0
    )
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        input=str(corpus / "book0.txt"),
        model_prefix=str(root / "sp"),
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        hard_vocab_limit=False,
        minloglevel=2,
        allow_whitespace_only_pieces=True,
        split_by_whitespace=False,
    )
    return {"corpus": corpus, "hf": tok_json, "tiktoken": ranks, "sentencepiece": root / "sp.model", "root": root}


@pytest.fixture(scope="module")
def tokenizers(files):
    return {
        "bytes": tokenizer_from_spec("bytes"),
        "hf": tokenizer_from_spec(f"hf:{files['hf']}"),
        "sentencepiece": tokenizer_from_spec(f"sentencepiece:{files['sentencepiece']}"),
        "tiktoken": tokenizer_from_spec(f"tiktoken:{files['tiktoken']}"),
    }


def test_every_tokenizer_is_registered():
    assert {"bytes", "hf", "sentencepiece", "tiktoken"} <= set(get_registry().names("tokenizers"))


@pytest.mark.parametrize("name", ["bytes", "hf", "sentencepiece", "tiktoken"])
def test_round_trip(tokenizers, name):
    tok = tokenizers[name]
    for text in SAMPLES:
        ids = tok.encode(text)
        assert tok.decode(ids) == text, (name, text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.eos_id not in ids  # a literal "<|endoftext|>" never becomes the separator
    assert tok.eos_id is not None and 0 <= tok.eos_id < tok.vocab_size


def test_trained_bpe_learns_merges(files, tokenizers):
    text = (files["corpus"] / "book1.txt").read_text()[:20_000]
    for name in ("hf", "tiktoken", "sentencepiece"):
        ids = tokenizers[name].encode(text)
        assert len(text.encode()) / len(ids) > 1.5, name  # fewer tokens than bytes
    assert tokenizers["hf"].vocab_size == 400 and tokenizers["tiktoken"].vocab_size == 400


def test_tokenizers_pickle_as_their_config(tokenizers):
    for _name, tok in tokenizers.items():
        clone = pickle.loads(pickle.dumps(tok))
        assert clone.encode(SAMPLES[2]) == tok.encode(SAMPLES[2]) and clone.fingerprint == tok.fingerprint


def test_fingerprint_follows_file_content(files, tmp_path):
    copy = tmp_path / "same.json"
    shutil.copy(files["hf"], copy)
    assert tokenizer_from_spec(f"hf:{copy}").fingerprint == tokenizer_from_spec(f"hf:{files['hf']}").fingerprint
    data = json.loads(copy.read_text())
    data["model"]["merges"] = data["model"]["merges"][:-1]  # one merge fewer: a different mapping
    copy.write_text(json.dumps(data))
    assert tokenizer_from_spec(f"hf:{copy}").fingerprint != tokenizer_from_spec(f"hf:{files['hf']}").fingerprint
    # Options that change the ids change it too.
    a = tokenizer_from_spec(f"tiktoken:{files['tiktoken']}")
    b = tokenizer_from_spec(f"tiktoken:{files['tiktoken']}", [r"pattern=\S+|\s+"])
    assert a.fingerprint != b.fingerprint and b.decode(b.encode(SAMPLES[1])) == SAMPLES[1]


def test_an_eos_is_added_when_the_vocabulary_has_none(files, tmp_path):
    data = json.loads(files["hf"].read_text())
    data["added_tokens"] = []
    del data["model"]["vocab"]["<|endoftext|>"]
    path = tmp_path / "no-eos.json"
    path.write_text(json.dumps(data))
    tok = tokenizer_from_spec(f"hf:{path}")
    assert tok.eos_id == max(data["model"]["vocab"].values()) + 1 == tok.vocab_size - 1
    assert tok.decode(tok.encode("plain text") + [tok.eos_id]) == "plain text"


def test_missing_and_bad_files_are_one_clear_line(files, tmp_path):
    with pytest.raises(UserError, match="needs a file: set data.tokenizer.path"):
        tokenizer_from_spec("hf")
    with pytest.raises(UserError, match="'nope.model' does not exist"):
        tokenizer_from_spec("sentencepiece:nope.model")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01 not a tokenizer")
    with pytest.raises(UserError, match="is not a Hugging Face tokenizers JSON"):
        tokenizer_from_spec(f"hf:{junk}")
    with pytest.raises(UserError, match="is not a SentencePiece model"):
        tokenizer_from_spec(f"sentencepiece:{junk}")
    with pytest.raises(UserError, match="is not 'base64-token rank'"):
        tokenizer_from_spec(f"tiktoken:{junk}")
    few = tmp_path / "few.tiktoken"
    few.write_text("YQ== 0\nYg== 1\n")
    with pytest.raises(UserError, match="lacks 254 of the 256 single bytes"):
        tokenizer_from_spec(f"tiktoken:{few}")
    with pytest.raises(UserError, match="unknown option 'vocab' for tokenizer 'hf'"):
        tokenizer_from_spec(f"hf:{files['hf']}", ["vocab=3"])


def test_a_missing_library_names_the_pip_command(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # import now fails
    with pytest.raises(UserError, match=r"needs the 'tiktoken' package; run: pip install 'zoo-core\[data\]'"):
        tokenizer_from_spec(f"tiktoken:{files['tiktoken']}")


def test_cli_train_refuses_a_tiny_vocab_and_info_prints(files, capsys):
    assert (
        main(["tokenizer", "train", "--vocab", "100", str(files["corpus"]), "--out", str(files["root"] / "x.json")])
        == 2
    )
    assert "--vocab 100 is too small" in capsys.readouterr().err
    assert main(["tokenizer", "info", f"hf:{files['hf']}", "--text", "café"]) == 0
    out = capsys.readouterr().out
    assert "vocab_size 400" in out and "decoded: 'café'" in out
