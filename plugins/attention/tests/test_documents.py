"""data.documents=reset: packed documents give, in float64, the outputs and gradients of each
document run alone, on every path (naive, SDPA with the document mask, forward with a KV cache,
step with `reset`); positions (RoPE and learned) restart at each document's start."""

import pytest
import torch

from zoo_attention import Attention, AttentionConfig
from zoo_core.state import detach_state, select_rows

DIM, T = 32, 13
# Row 0: a document from t=0 (the incoming state is not its own), one of length 1, a long one.
# Row 1: its first document continues the incoming state's, then two more.
LENGTHS = [[5, 1, 7], [3, 6, 4]]
CONFIGS = [
    {},
    {"n_kv_heads": 2},
    {"window": 4},
    {"n_kv_heads": 1, "window": 3},
    {"rope_fraction": 0.5, "out_bias": True},
    {"position": "learned"},
    {"position": "learned", "window": 5, "n_kv_heads": 2},
    {"position": "none", "window": 4},
    {"conv": 3, "position": "none"},
    {"conv": 4, "position": "learned", "window": 4},
]


@pytest.fixture(autouse=True)
def small_query_blocks(monkeypatch):
    """SDPA under a mask runs queries in blocks (mixer.QUERY_BLOCK): 5 here, so that T=13 spans
    three blocks (and a prefill of 4, one)."""
    from zoo_attention import mixer

    monkeypatch.setattr(mixer, "QUERY_BLOCK", 5)


def make(backend="auto", **kw):
    torch.manual_seed(0)
    m = Attention(DIM, AttentionConfig(head_dim=8, max_positions=64, backend=backend, **kw))
    m.reset_parameters()
    return m.double()


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def resets_of(lengths, T=T):
    r = torch.zeros(len(lengths), T, dtype=torch.bool)
    for row, ls in enumerate(lengths):
        starts = torch.tensor(ls).cumsum(0)[:-1].tolist()
        r[row, [0, *starts]] = True
    r[1, 0] = False  # row 1's first document continues the incoming state
    return r


def incoming_state(m, gen):
    """The state after a 6-token prefix: nonzero keys, values, conv inputs and positions."""
    prefix = torch.randn(2, 6, DIM, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        _, state = m(prefix, return_state=True)
    return detach_state(state)


def inputs():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, T, DIM, dtype=torch.float64, generator=gen).requires_grad_()
    return x, gen


def separate(m, x, state):
    """Each document run alone from init_state; row 1's first one from the incoming state."""
    rows = []
    for row, ls in enumerate(LENGTHS):
        outs, a = [], 0
        for i, n in enumerate(ls):
            own = select_rows(state, [row]) if (row == 1 and i == 0) else None
            outs.append(m(x[row : row + 1, a : a + n], own)[0])
            a += n
        rows.append(torch.cat(outs, 1))
    return torch.cat(rows, 0)


def grads(m, x, y, g):
    return torch.autograd.grad(y, [x, *m.parameters()], g)


def assert_same_with_gradients(m, x, y, want, gen, tol=1e-12):
    """y == want, and so are the gradients of x and of m's parameters under one random cotangent."""
    assert rel(y, want) < tol
    g = torch.randn(want.shape, dtype=torch.float64, generator=gen)
    for a, b in zip(grads(m, x, y, g), grads(m, x, want, g)):
        assert rel(a, b) < tol


@pytest.mark.parametrize("backend", ["auto", "naive"])
@pytest.mark.parametrize("kw", CONFIGS)
def test_packed_equals_separate_with_gradients(backend, kw):
    m = make(backend, **kw)
    x, gen = inputs()
    state = incoming_state(m, gen)
    resets = resets_of(LENGTHS)
    packed, _ = m(x, state, resets=resets)
    assert_same_with_gradients(m, x, packed, separate(m, x, state), gen)


@pytest.mark.parametrize("block", [5, 13])
@pytest.mark.parametrize("kw", CONFIGS)
def test_packed_from_no_state_equals_separate(kw, block, monkeypatch):
    """No incoming state (training's call): every row starts a document at t=0. Query blocks
    of 5 (three, each from the earliest start of its first query's document) and of 13 (one)."""
    from zoo_attention import mixer

    monkeypatch.setattr(mixer, "QUERY_BLOCK", block)
    m = make(**kw)
    x, gen = inputs()
    lengths = [[5, 1, 7], [1, 8, 4]]
    resets = resets_of(lengths)
    resets[:, 0] = True
    packed, _ = m(x, resets=resets)
    rows = []
    for row, ls in enumerate(lengths):
        bounds = torch.tensor([0, *ls]).cumsum(0).tolist()
        rows.append(torch.cat([m(x[row : row + 1, a:b])[0] for a, b in zip(bounds, bounds[1:])], 1))
    assert_same_with_gradients(m, x, packed, torch.cat(rows, 0), gen)


def test_document_plan_made_once_per_resets(monkeypatch):
    """Every layer of a forward gets the same resets tensor: its mask is made once; a new tensor,
    or the same one modified in place, gets its own."""
    from zoo_attention import mixer

    made = []
    real = mixer.mask_blocks
    monkeypatch.setattr(mixer, "mask_blocks", lambda *a: made.append(1) or real(*a))
    m = make()
    x = torch.randn(2, T, DIM, dtype=torch.float64)
    resets = resets_of([[5, 1, 7], [1, 8, 4]])
    first, _ = m(x, resets=resets)
    m(x, resets=resets)
    assert len(made) == 1
    m(x, resets=resets.clone())
    assert len(made) == 2
    resets[0, 2] = True  # in place: a new document at t=2 in row 0
    moved, _ = m(x, resets=resets)
    assert len(made) == 3
    assert rel(moved[0, :2], first[0, :2]) < 1e-12 and rel(moved[0, 2:5], first[0, 2:5]) > 1e-3


@pytest.mark.parametrize("kw", CONFIGS)
def test_naive_equals_sdpa_with_resets(kw):
    fast, naive = make(**kw), make("naive", **kw)
    x, gen = inputs()
    state = incoming_state(fast, gen)
    resets = resets_of(LENGTHS)
    y_fast, s_fast = fast(x, state, return_state=True, resets=resets)
    y_naive, s_naive = naive(x, state, return_state=True, resets=resets)
    assert rel(y_fast, y_naive) < 1e-12
    assert all(torch.allclose(s_fast[key], s_naive[key], atol=1e-12) for key in s_fast)
    g = torch.randn(y_fast.shape, dtype=torch.float64, generator=gen)
    for a, b in zip(grads(fast, x, y_fast, g), grads(naive, x, y_naive, g)):
        assert rel(a, b) < 1e-12


@pytest.mark.parametrize("kw", CONFIGS)
def test_step_with_reset_equals_packed(kw):
    """Step by step from the incoming state, and prefill + step, with `reset` per token."""
    m = make(**kw)
    x, gen = inputs()
    x = x.detach()
    state = incoming_state(m, gen)
    resets = resets_of(LENGTHS)
    with torch.no_grad():
        packed, _ = m(x, state, resets=resets)
        for k in (0, 4, 6):  # prefill k tokens (4: inside a document; 6: right after a length-1 one)
            s = state
            outs = []
            if k:
                y, s = m(x[:, :k], s, return_state=True, resets=resets[:, :k])
                outs.append(y)
            for t in range(k, T):
                y, s = m.step(x[:, t], s, reset=resets[:, t])
                outs.append(y[:, None])
            assert rel(torch.cat(outs, 1), packed) < 1e-12, f"prefill {k}"


@pytest.mark.parametrize("kw", CONFIGS)
@pytest.mark.parametrize("cut", [2, 3, 6, 9])
def test_cache_carries_into_the_next_segment(kw, cut):
    """Two segments with the carried cache equal the packed whole: the second segment's rows
    first continue the document the cache holds (its positions go on), then reset."""
    m = make(**kw)
    x, gen = inputs()
    state = incoming_state(m, gen)
    resets = resets_of(LENGTHS)
    whole, _ = m(x, state, resets=resets)
    a, carried = m(x[:, :cut], state, return_state=True, resets=resets[:, :cut])
    b, _ = m(x[:, cut:], carried, resets=resets[:, cut:])
    assert_same_with_gradients(m, x, torch.cat([a, b], 1), whole, gen)
    # A later segment without resets (a prompt's continuation) still hides the old documents.
    c, _ = m(x[:, cut:], carried)
    alone_resets = resets[:, cut:].clone()
    alone_resets[:] = False
    d, _ = m(x[:, cut:], carried, resets=alone_resets)
    assert rel(c, d) < 1e-12


def test_positions_restart_at_each_document():
    """RoPE and learned positions count from each document's start, also after a cache."""
    from zoo_attention.mixer import documents

    resets = resets_of(LENGTHS)
    q_abs = 6 + torch.arange(T).expand(2, T)
    state = {"start": torch.tensor([5, 2])}
    pos = q_abs - documents(q_abs, resets, state)
    assert pos[0].tolist() == [0, 1, 2, 3, 4, 0, 0, 1, 2, 3, 4, 5, 6]
    assert pos[1].tolist() == [4, 5, 6, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    assert documents(q_abs, None, None) is None  # the stream from 0: no mask, plain causal SDPA


def test_no_resets_keeps_plain_causal_sdpa(monkeypatch):
    """Without resets the forward takes SDPA's is_causal kernel, no mask; all-False resets
    (one document per row) compute the same function through the mask."""
    import torch.nn.functional as F

    m = make()
    x = torch.randn(2, T, DIM, dtype=torch.float64)
    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(*args, **kw):
        calls.append((kw.get("is_causal", False), kw.get("attn_mask") is not None))
        return sdpa(*args, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    plain, _ = m(x)
    masked, _ = m(x, resets=torch.zeros(2, T, dtype=torch.bool))
    assert calls[0] == (True, False) and calls[1:] == [(False, True)] * 3  # T=13: 3 query blocks of 5
    assert rel(masked, plain) < 1e-12


def test_resets_on_a_flash_setup_use_sdpa_once(monkeypatch):
    from zoo_attention import flash
    from zoo_attention.mixer import attention_path

    monkeypatch.setattr(flash, "usable", lambda q: True)
    monkeypatch.setattr(flash, "_said", False)
    q = torch.zeros(1, 2, 3, 8)
    with pytest.warns(UserWarning, match="document mask"):
        assert attention_path("auto", q, plain_causal=False, resets=True) == "sdpa"
    assert attention_path("auto", q, plain_causal=True) == "flash"
    assert Attention.supports_resets


@pytest.mark.parametrize("documents", [False, True])
@pytest.mark.parametrize("window", [None, 3, 7])
@pytest.mark.parametrize("cached", [0, 4])
@pytest.mark.parametrize("block", [1, 5, 13])
def test_query_blocks_equal_one_masked_call(window, cached, block, documents, monkeypatch):
    """Blocked SDPA under a mask reads fewer keys (not those before a block's documents), never a
    visible one."""
    import torch.nn.functional as F

    from zoo_attention import mixer
    from zoo_attention.reference import allowed

    monkeypatch.setattr(mixer, "QUERY_BLOCK", block)
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(2, 4, T, 8, dtype=torch.float64, generator=gen).requires_grad_()
    k, v = (torch.randn(2, 2, cached + T, 8, dtype=torch.float64, generator=gen).requires_grad_() for _ in "kv")
    q_abs = 3 + cached + torch.arange(T).expand(2, T)
    k_abs = 3 + torch.arange(cached + T).expand(2, cached + T)
    resets = resets_of(LENGTHS)
    q_start = mixer.documents(q_abs, resets, {"start": torch.tensor([0, 4])}) if documents else None
    mask = allowed(q_abs, k_abs, window, q_start)[:, None]
    blocks = mixer.mask_blocks(q_abs, k_abs, window, q_start, torch.float64)
    if documents and block == 5:
        # each block's first key: the earliest (over rows) document start of its first query
        # (rows 0, 1 at t=0: key 0 + cached, 1; t=5: 5 + cached, 3 + cached; t=10: 6 + cached,
        # 9 + cached), or its window's first key where that is later
        want = {(None, 0): [0, 3, 6], (None, 4): [1, 7, 10], (3, 0): [0, 3, 8], (3, 4): [2, 7, 12]}
        assert [lo for _, _, lo, _, _ in blocks] == want[window if window == 3 else None, cached]
    blocked = mixer.masked_sdpa(q, k, v, blocks, gqa=True)
    whole = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    assert rel(blocked, whole) < 1e-13
    g = torch.randn(whole.shape, dtype=torch.float64, generator=gen)
    for a, b in zip(torch.autograd.grad(blocked, [q, k, v], g), torch.autograd.grad(whole, [q, k, v], g)):
        assert rel(a, b) < 1e-13


# -- whole models: attention hybrids and Griffin (hawk + local attention) -------------------------


def language_model(preset=None, pattern=None):
    from omegaconf import OmegaConf

    from zoo_core.config import load_config, resolve
    from zoo_core.loop.model import build_model
    from zoo_core.registry import get_registry

    registry = get_registry()
    cfg = load_config(None, ["model.dim=32", "model.n_layers=3", "model.mixer.head_dim=8"])
    cfg.model.preset, cfg.model.pattern = preset, pattern
    cfg = resolve(cfg, registry)
    for opts in cfg.model.pattern or []:
        if opts.get("window") == 1024:  # griffin's local attention, its window shrunk to matter at T=13
            opts["window"] = 4
    torch.manual_seed(0)
    model = build_model(OmegaConf.create(OmegaConf.to_container(cfg)), registry, vocab_size=64).double()
    unsupported = [type(layer.mixer).__name__ for layer in model.layers if not layer.mixer.supports_resets]
    if unsupported:
        pytest.skip(f"mixers without resets yet: {', '.join(sorted(set(unsupported)))}")
    return model


MODELS = {
    "attention hybrid": {"pattern": [{"name": "attention", "window": 4, "conv": 3}, "attention"]},
    "griffin": {"preset": "griffin"},  # runs once zoo-hawk's mixer takes resets
}


def first(n: int) -> torch.Tensor:
    """resets for one document of n tokens run alone: a start at 0 only."""
    r = torch.zeros(1, n, dtype=torch.bool)
    r[0, 0] = True
    return r


@pytest.mark.parametrize("name", list(MODELS))
def test_whole_model_packed_equals_separate(name):
    """LanguageModel.logits(resets=) and step(reset=) on packed rows equal each document alone."""
    if name == "griffin":
        pytest.importorskip("zoo_hawk")
    model = language_model(**MODELS[name])
    lengths = [[5, 1, 7], [1, 8, 4]]
    resets = resets_of(lengths)
    resets[:, 0] = True
    tokens = torch.randint(0, 64, (2, T), generator=torch.Generator().manual_seed(3))
    packed, _ = model.logits(tokens, resets=resets)
    rows = []
    for row, ls in enumerate(lengths):
        bounds = torch.tensor([0, *ls]).cumsum(0).tolist()
        # a document alone starts with a reset too: Hawk's first token skips the input normaliser (RecurrentGemma)
        alone_docs = [
            model.logits(tokens[row : row + 1, a:b], resets=first(b - a))[0] for a, b in zip(bounds, bounds[1:])
        ]
        rows.append(torch.cat(alone_docs, 1))
    alone = torch.cat(rows, 0)
    assert rel(packed, alone) < 1e-12
    g = torch.randn(packed.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    params = list(model.parameters())
    for a, b in zip(torch.autograd.grad(packed, params, g), torch.autograd.grad(alone, params, g)):
        assert rel(a, b) < 1e-12
    with torch.no_grad():
        state, stepped = model.init_state(2, dtype=torch.float64), []
        for t in range(T):
            y, state = model.step(tokens[:, t], state, reset=resets[:, t])
            stepped.append(y)
    assert rel(torch.stack(stepped, 1), packed) < 1e-12


@pytest.mark.parametrize("kw", [{}, {"window": 4, "conv": 3, "n_kv_heads": 2}])
def test_resets_compile_in_one_graph(kw):
    """parallel.compile=true with data.documents=reset: the document path traces whole (aot_eager,
    what inductor would get) and computes the eager outputs and gradients."""
    m = make(**kw)
    x, gen = inputs()
    resets = resets_of(LENGTHS)
    resets[:, 0] = True
    compiled = torch.compile(lambda x, r: m(x, resets=r)[0], backend="aot_eager", fullgraph=True)
    assert_same_with_gradients(m, x, compiled(x, resets), m(x, resets=resets)[0], gen)
