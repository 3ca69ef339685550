"""The MQAR data source: well-formed recall windows, deterministic, resumable."""
import pytest
import torch

from zoo_core.data.mqar import MQARConfig, MQARSource
from zoo_core.errors import UserError
from zoo_core.tokenizers import ByteTokenizer


def source(**kw):
    return MQARSource(MQARConfig(vocab=64, num_kv_pairs=6), tokenizer=ByteTokenizer(), split="train",
                      seq_len=47, n_streams=3, seed=1, **kw)


def test_every_target_is_the_value_bound_to_the_queried_key():
    inputs, targets = source().batch([0, 1, 2])
    for x, y in zip(inputs, targets):
        pairs = {int(x[2 * i]): int(x[2 * i + 1]) for i in range(6)}
        answered = (y != -100).nonzero().flatten().tolist()
        assert len(answered) == 6 and min(answered) >= 12  # only the queries are scored
        for t in answered:
            assert int(y[t]) == pairs[int(x[t])]
        assert all(k < 32 <= v for k, v in pairs.items())


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


def test_refuses_a_window_too_short_for_the_pairs():
    with pytest.raises(UserError, match="seq_len"):
        MQARSource(MQARConfig(num_kv_pairs=20), tokenizer=ByteTokenizer(), split="train", seq_len=32, n_streams=1)
