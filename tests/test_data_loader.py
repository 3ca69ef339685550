"""Reading prepared shards for training: every token read whatever the number of
streams and ranks, exact resume, mixtures by weight and by seed, refusals."""

import json

import numpy as np
import pytest

from zoo_core.data.corpus import CorpusConfig, CorpusSource
from zoo_core.data.mixture import MixtureConfig, MixtureSource
from zoo_core.data.prepare import prepare
from zoo_core.data.shards import read_manifest
from zoo_core.data.synthetic import write_corpus
from zoo_core.errors import UserError
from zoo_core.tokenizers import ByteTokenizer

L = 16  # seq_len


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """Two prepared corpora with disjoint alphabets, in many small shards."""
    root = tmp_path_factory.mktemp("loader")
    out = {}
    for name, letters in (("ab", "abcdefghijklm"), ("xy", "nopqrstuvwxyz")):
        src = write_corpus(root / f"src-{name}", 24_000, kinds=("text", "jsonl"), letters=letters, seed=len(out))
        out[name] = prepare(str(src), ByteTokenizer(), root / name, progress=False, shard_mb=0.004)
    return out


def corpus(path, n_streams, split="train", **kw):
    return CorpusSource(
        CorpusConfig(path=str(path), **kw), tokenizer=ByteTokenizer(), split=split, seq_len=L, n_streams=n_streams
    )


def mixture(dirs, n_streams, seed=0, weights=(0.7, 0.3)):
    sources = {str(dirs["ab"]): weights[0], str(dirs["xy"]): weights[1]}
    return MixtureSource(
        MixtureConfig(sources=sources),
        tokenizer=ByteTokenizer(),
        split="train",
        seq_len=L,
        n_streams=n_streams,
        seed=seed,
    )


def all_tokens(path, split="train"):
    m = read_manifest(path)
    return np.concatenate([np.fromfile(path / sh["file"], dtype=m["dtype"]) for sh in m["splits"][split]["shards"]])


@pytest.mark.parametrize("n_streams,world", [(1, 1), (3, 1), (7, 2), (8, 3), (5, 5)])
def test_every_token_of_every_shard_is_read(dirs, n_streams, world):
    """Read one epoch of every stream, the streams spread over `world` ranks like
    the training loop does; the targets rebuild the whole split, in order."""
    expected = all_tokens(dirs["ab"])
    assert len(read_manifest(dirs["ab"])["splits"]["train"]["shards"]) > 3
    ranks = [corpus(dirs["ab"], n_streams) for _ in range(world)]  # one loader per rank
    owned = [list(range(r * n_streams // world, (r + 1) * n_streams // world)) for r in range(world)]
    sections = []
    for r, streams in enumerate(owned):
        for s in streams:
            _, length = ranks[r].section(s)
            targets = np.concatenate([ranks[r].batch([s])[1][0].numpy() for _ in range(-(-length // L))])
            # Targets start one token into the section and wrap around its end.
            sections.append(np.roll(targets[:length], 1))
    assert np.array_equal(np.concatenate(sections), expected)


def test_a_stream_reads_the_same_at_any_world_size(dirs):
    G = 6
    reference = corpus(dirs["ab"], G)
    rows = {s: [] for s in range(G)}
    for _ in range(40):  # several epochs of the shortest section
        x = reference.batch(range(G))[0]
        for s in range(G):
            rows[s].append(x[s].numpy())
    for world in (2, 3):
        loaders = [corpus(dirs["ab"], G) for _ in range(world)]
        for k in range(40):
            for r in range(world):
                mine = list(range(r * G // world, (r + 1) * G // world))
                x = loaders[r].batch(mine)[0]
                for i, s in enumerate(mine):
                    assert np.array_equal(x[i].numpy(), rows[s][k])


@pytest.mark.parametrize("kind", ["corpus", "mixture"])
def test_the_loader_resumes_exactly(dirs, kind):
    make = (lambda: corpus(dirs["ab"], 4)) if kind == "corpus" else (lambda: mixture(dirs, 4, seed=3))
    src = make()
    for _ in range(7):
        src.batch([0, 1, 2, 3])
    state = json.loads(json.dumps(src.state_dict()))  # checkpoints store it as JSON
    after = [src.batch([0, 1, 2, 3]) for _ in range(30)]
    fresh = make()
    fresh.load_state_dict(state)
    again = [fresh.batch([0, 1, 2, 3]) for _ in range(30)]
    for first, second in zip(after, again):
        assert len(first) == len(second) == 3  # inputs, targets and document starts
        assert all(np.array_equal(a, b) for a, b in zip(first, second))


def _from_ab(window):
    letters = set(b"abcdefghijklm")
    return any(t in letters for t in window.tolist())


def test_mixture_proportions_are_within_tolerance(dirs):
    src = mixture(dirs, 8)
    picks = []
    for _ in range(250):
        x = src.batch(range(8))[0]
        picks += [_from_ab(row) for row in x]
    share = float(np.mean(picks))
    # 2000 draws at p=0.7: one standard deviation is 0.01.
    assert abs(share - 0.7) < 0.04, share
    assert sum(map(sum, src.counts)) == 2000


def test_mixture_sampling_is_deterministic_from_the_seed_and_world_size_invariant(dirs):
    a, b, c = mixture(dirs, 4, seed=1), mixture(dirs, 4, seed=1), mixture(dirs, 4, seed=2)
    xa = [a.batch(range(4))[0] for _ in range(20)]
    xb = [b.batch(range(2))[0] for _ in range(20)]  # rank 0 of 2
    xc = [c.batch(range(4))[0] for _ in range(20)]
    assert all(np.array_equal(p[:2], q) for p, q in zip(xa, xb))
    assert any(not np.array_equal(p, q) for p, q in zip(xa, xc))


def test_a_manifest_from_another_tokenizer_is_refused(dirs, tmp_path):
    class Other(ByteTokenizer):
        fingerprint = "other-v1"

    with pytest.raises(UserError, match="was tokenized with 'bytes-v1' but the model uses 'other-v1'"):
        CorpusSource(CorpusConfig(path=str(dirs["ab"])), tokenizer=Other(), split="train", seq_len=L, n_streams=2)


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_truncated_missing_and_corrupted_shards_are_refused_by_name(dirs, tmp_path):
    bad = _copy(dirs["ab"], tmp_path / "truncated")
    shard = bad / read_manifest(bad)["splits"]["train"]["shards"][2]["file"]
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(UserError, match=f"shard '{shard}' is truncated or damaged"):
        corpus(bad, 2)
    shard.unlink()
    with pytest.raises(UserError, match=f"shard '{shard}' is missing"):
        corpus(bad, 2)

    bad = _copy(dirs["ab"], tmp_path / "flipped")
    shards = read_manifest(bad)["splits"]["train"]["shards"]
    shard = bad / shards[0]["file"]
    data = bytearray(shard.read_bytes())
    data[10] ^= 0x20  # same size, different content
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"shard '{shard}' is corrupted"):
        corpus(bad, 2, verify="full")
    lazy = corpus(bad, 2)  # checks each shard when first read
    with pytest.raises(UserError, match=f"shard '{shard}' is corrupted"):
        lazy.batch([0])
    assert corpus(bad, 2, verify="size").batch([1])[0].shape == (1, L)  # opted out of hashing


def test_too_little_data_and_a_changed_layout_are_refused(dirs):
    with pytest.raises(UserError, match="too few for 5000 streams"):
        corpus(dirs["ab"], 5000)
    state = corpus(dirs["ab"], 4).state_dict()
    with pytest.raises(UserError, match="keep train.global_batch and data.seq_len"):
        corpus(dirs["ab"], 2).load_state_dict(state)
    with pytest.raises(UserError, match="keep data.source.sources and train.seed"):
        mixture(dirs, 4, seed=1).load_state_dict(mixture(dirs, 4, seed=0).state_dict())
    with pytest.raises(UserError, match="data.source.sources is empty"):
        MixtureSource(MixtureConfig(), tokenizer=ByteTokenizer(), split="train", seq_len=L, n_streams=2)
    with pytest.raises(UserError, match="weights must be >= 0"):
        mixture(dirs, 2, weights=(1.0, -1.0))


def test_training_on_a_mixture_resumes_exactly_through_checkpoints(dirs, tmp_path, tiny_overrides):
    from zoo_core.train import train

    sources = f"{{{dirs['ab']}: 0.6, {dirs['xy']}: 0.4}}"
    common = tiny_overrides + [
        "data.seq_len=16",
        "model.dim=16",
        "train.sample_tokens=0",
        "train.ckpt_every=2",
        "data.source.name=mixture",
        f"data.source.sources={sources}",
    ]
    train(None, [o.replace("name=t", "name=straight") for o in common] + ["train.steps=4"])
    train(None, [o.replace("name=t", "name=resumed") for o in common] + ["train.steps=2"])
    train(str(tmp_path / "resumed"), ["train.steps=4"])

    def losses(name):
        rows = [json.loads(l) for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r]

    assert losses("straight") == losses("resumed")


# -- document starts (data.documents=reset) ----------------------------------------------


def document_starts(path, split="train"):
    """From the index alone: True at the split's first token and at each token after a document's end."""
    m = read_manifest(path)
    shards = m["splits"][split]["shards"]
    n = sum(sh["tokens"] for sh in shards)
    starts, offset = np.zeros(n + 1, dtype=bool), 0
    starts[0] = True
    for sh in shards:
        starts[offset + np.fromfile(path / sh["index"], dtype=np.uint64).astype(np.int64)] = True
        offset += sh["tokens"]
    return starts[:n]


@pytest.mark.parametrize("n_streams", [1, 3, 7])
def test_corpus_starts_are_the_documents_of_the_index_and_the_wraps(dirs, n_streams):
    """Every stream over more than an epoch: a start wherever the index says a document begins,
    and after each wrap of the section's ring (its first token does not continue its last)."""
    expected, tokens = document_starts(dirs["ab"]), all_tokens(dirs["ab"])
    assert 10 < expected.sum() < len(expected) // 20  # several documents, many tokens each
    src = corpus(dirs["ab"], n_streams)
    for s in range(n_streams):
        first, length = src.section(s)
        windows = 2 * (-(-length // L))
        x, starts = [], []
        for _ in range(windows):
            batch = src.batch([s])
            x.append(batch[0][0].numpy())
            starts.append(batch[2][0].numpy())
        x, starts = np.concatenate(x), np.concatenate(starts)
        n = np.arange(len(x))
        assert np.array_equal(x, tokens[first + n % length])  # the stream, for reference
        want = expected[first + n % length] | ((n % length == 0) & (n > 0))
        assert np.array_equal(starts, want), np.flatnonzero(starts != want)[:5]
        assert starts.dtype == bool


def test_every_token_after_an_eos_starts_a_document(dirs):
    inputs, _, starts = corpus(dirs["ab"], 4).batch(range(4))
    eos = ByteTokenizer().eos_id
    after = np.zeros(inputs.shape, dtype=bool)
    after[:, 1:] = (inputs[:, :-1] == eos).numpy()
    assert after.any() or starts.any()
    assert not (after & ~starts.numpy()).any()


def test_mixture_starts_are_its_sources_and_a_change_of_source(dirs):
    mix = mixture(dirs, 3, seed=5)
    parts = {str(dirs["ab"]): corpus(dirs["ab"], 3), str(dirs["xy"]): corpus(dirs["xy"], 3)}
    for k in range(40):
        _, _, starts = mix.batch(range(3))
        for s in range(3):
            j = mix.choose(s, k)
            part = parts[mix.names[j]]
            want = part.window_starts(s, mix.counts[s][j] - 1)[:-1].copy()
            if k > 0 and mix.choose(s, k - 1) != j:
                want[0] = True
            assert np.array_equal(starts[s].numpy(), want), (k, s)
    assert mix.reports_documents


def test_a_directory_without_the_document_index_reports_none(dirs, tmp_path):
    old = _copy(dirs["ab"], tmp_path / "format1")
    manifest = json.loads((old / "manifest.json").read_text())
    for split in manifest["splits"].values():
        for sh in split["shards"]:
            sh.pop("index"), sh.pop("index_sha256")
    (old / "manifest.json").write_text(json.dumps(manifest))
    src = corpus(old, 2)
    assert not src.reports_documents and len(src.batch([0, 1])) == 2
    assert not mixture({"ab": old, "xy": dirs["xy"]}, 2).reports_documents
