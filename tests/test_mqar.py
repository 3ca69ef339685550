"""The MQAR data source: Zoology's format (answers never visible), learnable only through
the key-value binding, deterministic, resumable, with its own vocabulary."""

from collections import Counter, defaultdict

import pytest
import torch

from zoo_core.data.mqar import MQARConfig, MQARSource
from zoo_core.errors import UserError
from zoo_core.tokenizers import ByteTokenizer

N = 4


def source(split="train", n_streams=3, seq_len=48, **kw):
    cfg = MQARConfig(**{"vocab": 64, "num_kv_pairs": N, **kw})
    return MQARSource(cfg, tokenizer=ByteTokenizer(), split=split, seq_len=seq_len, n_streams=n_streams, seed=1)


def windows(src, n_batches):
    xs, ys, _ = zip(*(src.batch(list(range(src.n_streams))) for _ in range(n_batches)))
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("kw", [{}, {"random_filler": True}, {"power_a": 1.0}])
def test_every_target_is_the_value_bound_to_the_queried_key(kw):
    inputs, targets = windows(source(**kw), 20)
    for x, y in zip(inputs, targets):
        pairs = {int(x[2 * i]): int(x[2 * i + 1]) for i in range(N)}
        assert len(pairs) == N and len(set(pairs.values())) == N  # distinct keys, distinct values
        assert all(1 <= k < 32 <= v < 64 for k, v in pairs.items())  # disjoint key and value ranges
        answered = (y != -100).nonzero().flatten().tolist()
        assert len(answered) == N and min(answered) >= 2 * N  # only the query region is scored
        assert sorted(int(x[t]) for t in answered) == sorted(pairs)  # every key queried once
        for t in answered:
            assert int(y[t]) == pairs[int(x[t])]


@pytest.mark.parametrize("kw", [{}, {"random_filler": True}])
def test_no_scored_answer_reappears_in_the_inputs_after_its_position(kw):
    """The leak the old format had: values written after their queries let a model that never
    binds keys to values eliminate answers already given."""
    inputs, targets = windows(source(**kw), 30)
    values = set(range(32, 64))
    for x, y in zip(inputs, targets):
        for t in (y != -100).nonzero().flatten().tolist():
            assert int(y[t]) not in x[t:].tolist()
        # The query region holds keys and filler only: never a value at all.
        assert not values & set(x[2 * N :].tolist())


def test_filler_is_fixed_or_drawn_from_spare_keys():
    x, y = windows(source(), 5)
    query = x[:, 2 * N :][y[:, 2 * N :] == -100]
    assert set(query.tolist()) == {0}
    x, y = windows(source(random_filler=True), 20)
    for row, tgt in zip(x, y):
        keys = set(row[0 : 2 * N : 2].tolist())
        filler = row[2 * N :][tgt[2 * N :] == -100].tolist()
        assert len(set(filler)) > 3 and all(1 <= f < 32 and f not in keys for f in filler)
    with pytest.raises(UserError, match="filler"):
        source(filler=40)  # a value id


def test_query_gaps_follow_the_power_law():
    """P(gap g) ~ (g+1)^(a-1): with a = 0.01 the first slots are queried far more often than
    the last; with a = 1 every slot equally."""

    def slot_counts(**kw):
        x, y = windows(source(n_streams=50, **kw), 20)
        slots = ((y[:, 2 * N :] != -100).nonzero()[:, 1] // 2).tolist()
        return Counter(slots), len(slots)

    counts, n = slot_counts(power_a=0.01)
    n_slots = (48 - 2 * N) // 2
    # Slot 0 is drawn first with probability p0 / sum(p), and has 4 chances; it is queried in most windows.
    assert counts[0] > 0.6 * 1000 and counts[0] > 5 * counts[n_slots - 1]
    uniform, n = slot_counts(power_a=1.0)
    assert max(uniform.values()) < 2.0 * min(uniform[s] for s in range(n_slots))


def _blind_predictor_accuracy(train, held_out):
    """A model that sees everything but the key-value binding: for each query, the key's rank
    among the window's keys, the query's order in the query region, and which of the window's
    values (by rank) appear anywhere in the inputs after the context before it. It predicts a
    value rank with a table fitted on the training windows (majority vote per feature cell),
    scored on held-out windows."""

    def cells(x, y):
        for row, tgt in zip(x.tolist(), y.tolist()):
            keys, values = row[0 : 2 * N : 2], row[1 : 2 * N : 2]
            key_rank = {k: r for r, k in enumerate(sorted(keys))}
            value_rank = {v: r for r, v in enumerate(sorted(values))}
            order = 0
            for t, target in enumerate(tgt):
                if target == -100:
                    continue
                seen = frozenset(value_rank[v] for v in row[2 * N : t] if v in value_rank)
                yield (key_rank[row[t]], order, seen), value_rank[target]
                order += 1

    table = defaultdict(Counter)
    for feature, answer in cells(*train):
        table[feature][answer] += 1
    scored = [(table[f].most_common(1)[0][0] if table[f] else 0) == a for f, a in cells(*held_out)]
    return sum(scored) / len(scored), len(scored)


def test_learnability_bound_without_the_binding_is_chance():
    """Everything but the binding scores at most chance (1/num_kv_pairs) on held-out windows;
    the same predictor on the old, leaky format (values written after their queries) does far
    better, so this test would have caught the leak."""
    train, held_out = windows(source(n_streams=100), 40), windows(source("val", n_streams=100), 20)
    acc, n = _blind_predictor_accuracy(train, held_out)
    sd = (0.25 * 0.75 / n) ** 0.5
    assert n == 8000 and acc < 1 / N + 4 * sd

    def leaky(x, y):  # the old format: each query's value right after it
        x = x.clone()
        t = (y != -100).nonzero()
        x[t[:, 0], (t[:, 1] + 1).clamp(max=x.shape[1] - 1)] = y[t[:, 0], t[:, 1]]
        return x, y

    acc_leaky, _ = _blind_predictor_accuracy(leaky(*train), leaky(*held_out))
    assert acc_leaky > 0.45  # (1/4 + 1/3 + 1/2 + 1) / 4 = 0.52 by elimination


def test_vocabulary_is_the_sources_own():
    """8192 ids as in Zoology, whatever the tokenizer (bytes: 259); the model is sized from it."""
    from omegaconf import OmegaConf

    from zoo_core.components import model_vocab
    from zoo_core.config import load_config, resolve
    from zoo_core.registry import get_registry

    assert MQARConfig().vocab == 8192
    src = MQARSource(MQARConfig(num_kv_pairs=8), tokenizer=ByteTokenizer(), split="train", seq_len=64, n_streams=8)
    x, y, _ = src.batch(list(range(8)))
    assert int(x.max()) >= 4096 > 259 and src.vocab_size == 8192
    reg = get_registry()
    cfg = resolve(load_config(None, ["data.source.name=mqar", "data.seq_len=64"]), reg)
    assert model_vocab(cfg, reg, ByteTokenizer()) == 8192
    cfg.data.source = OmegaConf.create({"name": "corpus"})
    assert model_vocab(cfg, reg, ByteTokenizer()) == 264


def test_windows_do_not_depend_on_who_reads_them_and_resume_exactly():
    a, b = source(), source()
    first = a.batch([0, 1, 2])
    assert torch.equal(b.batch([2])[0], first[0][2:])  # stream 2 alone = stream 2 in a batch
    state = a.state_dict()
    nxt = a.batch([0, 1, 2])
    c = source()
    c.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(c.batch([0, 1, 2]), nxt))
    assert not torch.equal(nxt[0], first[0])
    assert not torch.equal(source("val").batch([0])[0], source().batch([0])[0])  # splits differ


def test_refuses_a_window_too_short_for_the_pairs():
    with pytest.raises(UserError, match="seq_len"):
        MQARSource(MQARConfig(num_kv_pairs=20), tokenizer=ByteTokenizer(), split="train", seq_len=64, n_streams=1)


def test_each_window_is_one_document():
    src = source()
    assert src.reports_documents
    for _ in range(3):
        inputs, _, starts = src.batch([0, 1, 2])
        assert starts.dtype == torch.bool and starts.shape == inputs.shape
        assert starts[:, 0].all() and not starts[:, 1:].any()
