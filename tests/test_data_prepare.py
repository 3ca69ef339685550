"""`zoo data prepare`: text/jsonl/parquet to shards, identical for any number of
workers, resumable, every source byte accounted for, bad input refused."""

import json

import numpy as np
import pytest

from zoo_core.cli import main
from zoo_core.data.corpora import iter_documents, source_files
from zoo_core.data.prepare import prepare
from zoo_core.data.shards import read_manifest
from zoo_core.data.synthetic import write_corpus
from zoo_core.errors import UserError
from zoo_core.tokenizers import ByteTokenizer

SHARD_MB = 0.01  # ~10 KB of source per shard: many shards from a tiny corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = write_corpus(tmp_path_factory.mktemp("src") / "corpus", 90_000)
    (root / "crlf.txt").write_bytes("first line\r\nsecond — line\r\n".encode() * 400)
    (root / "empty.txt").write_text("")
    return root


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    return prepare(
        str(corpus), ByteTokenizer(), tmp_path_factory.mktemp("p") / "one", progress=False, shard_mb=SHARD_MB
    )


def documents(prepared, split):
    """Decoded documents of a split, cut at the document ends the index files record
    (a long document may continue from one shard into the next)."""
    m = read_manifest(prepared)
    tok, docs, pending = ByteTokenizer(), [], []
    for sh in m["splits"][split]["shards"]:
        tokens = np.fromfile(prepared / sh["file"], dtype=m["dtype"])
        start = 0
        for end in np.fromfile(prepared / sh["index"], dtype=np.uint64).astype(int):
            assert tokens[end - 1] == tok.eos_id
            docs.append(tok.decode(pending + tokens[start : end - 1].tolist()))
            pending, start = [], end
        pending += tokens[start:].tolist()
    assert not pending  # the split ends with a document end
    return docs


def test_any_number_of_workers_gives_the_same_shards(corpus, prepared, tmp_path):
    two = prepare(str(corpus), ByteTokenizer(), tmp_path / "two", progress=False, workers=2, shard_mb=SHARD_MB)
    a, b = read_manifest(prepared), read_manifest(two)
    assert len(a["splits"]["train"]["shards"]) >= 5
    assert a["splits"] == b["splits"]


def test_every_source_document_is_in_the_shards(corpus, prepared):
    train, val = documents(prepared, "train"), documents(prepared, "val")
    m = read_manifest(prepared)
    for split, docs in (("train", train), ("val", val)):
        info = m["splits"][split]
        assert info["documents"] == len(docs)
        assert info["bytes"] == sum(len(d.encode()) for d in docs)  # source bytes, for bits per byte
    everything = set(train) | set(val)
    for doc_id, text in iter_documents(source_files(str(corpus))):
        if "@" in doc_id:  # a jsonl line or parquet row: whole, in one split
            assert text in everything
        elif text:  # a text file: its head in train, its tail in val
            head = next(d for d in train if text.startswith(d))
            assert text[len(head) :] in val
    assert "\r" not in "".join(train)  # newlines normalised like Python's text mode
    held_out = m["splits"]["val"]["bytes"] / (m["splits"]["val"]["bytes"] + m["splits"]["train"]["bytes"])
    assert 0.02 < held_out < 0.1  # val_fraction 0.05


def test_bits_per_byte_counts_source_bytes_whatever_the_tokenizer(corpus, prepared, tmp_path):
    from zoo_core.commands.tokenizer import tokenizer_from_spec
    from zoo_core.tokenizers.training import train_bpe

    tok = tokenizer_from_spec(f"hf:{train_bpe([str(corpus)], 320, tmp_path / 'bpe.json')}")
    bpe = read_manifest(prepare(str(corpus), tok, tmp_path / "bpe", progress=False, workers=2, shard_mb=SHARD_MB))
    byte = read_manifest(prepared)
    for split in ("train", "val"):
        assert bpe["splits"][split]["bytes"] == byte["splits"][split]["bytes"]
        assert bpe["splits"][split]["tokens"] < byte["splits"][split]["tokens"]
    assert bpe["tokenizer"] == tok.fingerprint and bpe["dtype"] == "uint16"


class Stop(Exception):
    pass


def test_an_interrupted_prepare_resumes_where_it_stopped(corpus, prepared, tmp_path):
    out = tmp_path / "resumed"

    def stop_after_three(rec, seen=[]):  # noqa: B006 -- the default list is the call counter
        seen.append(rec["piece"])
        if len(seen) == 3:
            raise Stop

    with pytest.raises(Stop):
        prepare(str(corpus), ByteTokenizer(), out, progress=False, shard_mb=SHARD_MB, on_piece=stop_after_three)
    assert not out.exists() and (tmp_path / "resumed.partial" / "progress.jsonl").exists()
    # Options that change the result are refused while a partial run of others exists.
    with pytest.raises(UserError, match="holds an interrupted prepare of other files or options"):
        prepare(str(corpus), ByteTokenizer(), out, val_fraction=0.1, progress=False, shard_mb=SHARD_MB)
    redone = []
    prepare(
        str(corpus),
        ByteTokenizer(),
        out,
        progress=False,
        shard_mb=SHARD_MB,
        workers=2,
        on_piece=lambda rec: redone.append(rec["piece"]),
    )
    total = len(read_manifest(prepared)["splits"]["train"]["shards"])
    assert len(redone) <= total + 2 - 3 and 0 not in redone  # finished pieces were skipped
    assert read_manifest(out)["splits"] == read_manifest(prepared)["splits"]
    assert not (tmp_path / "resumed.partial").exists()


def test_bad_input_is_refused_naming_the_file(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    with pytest.raises(UserError, match=r"a.jsonl \(line at byte 17\) is not valid JSON"):
        prepare(str(bad), ByteTokenizer(), tmp_path / "o1", progress=False)
    (bad / "a.jsonl").write_text('{"body": "no text field"}\n')
    with pytest.raises(UserError, match="has no 'text' field; set the field with --text-field"):
        prepare(str(bad), ByteTokenizer(), tmp_path / "o2", progress=False)
    assert read_manifest(prepare(str(bad), ByteTokenizer(), tmp_path / "o3", text_field="body", progress=False))
    import pyarrow as pa
    import pyarrow.parquet as pq

    (bad / "a.jsonl").unlink()
    pq.write_table(pa.table({"content": ["x"]}), bad / "t.parquet")
    with pytest.raises(UserError, match=r"t.parquet has no 'text' column \(columns: content\)"):
        prepare(str(bad), ByteTokenizer(), tmp_path / "o4", progress=False)
    (bad / "t.parquet").unlink()
    with pytest.raises(UserError, match="no .txt, .md, .jsonl or .parquet files under"):
        prepare(str(bad), ByteTokenizer(), tmp_path / "o5", progress=False)
    with pytest.raises(UserError, match="neither a named corpus"):
        prepare(str(tmp_path / "missing"), ByteTokenizer(), tmp_path / "o6", progress=False)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("mine")
    with pytest.raises(UserError, match="exists and is not a prepared data directory"):
        prepare(str(tmp_path / "o3"), ByteTokenizer(), tmp_path / "taken", progress=False)


def test_cli_prepare_info_and_verify(corpus, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "prepare", str(corpus), "--out", str(out), "--workers", "2", "--shard-mb", "0.02"]) == 0
    assert "documents" in capsys.readouterr().out
    assert main(["data", "info", str(out)]) == 0 and "bytes/token" in capsys.readouterr().out
    assert main(["data", "verify", str(out)]) == 0 and "all sizes and sha256 match" in capsys.readouterr().out
    shard = out / read_manifest(out)["splits"]["val"]["shards"][-1]["file"]
    data = bytearray(shard.read_bytes())
    data[3] ^= 1
    shard.write_bytes(bytes(data))
    assert main(["data", "verify", str(out)]) == 2
    assert f"shard '{shard}' is corrupted" in capsys.readouterr().err
    assert main(["data", "prepare", str(corpus), "--tokenizer", "hf", "--out", str(tmp_path / "x")]) == 2
    assert "tokenizer 'hf' needs a file" in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["train"]["shards"][0]["sha256"]
