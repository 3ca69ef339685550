"""data.documents (issue #27): the key, the refusals before training, the loop passing the
starts as resets (and not under stream), compare's identity, and the document-reset check."""

import dataclasses

import pytest
import torch

from zoo_core.cli import main
from zoo_core.data.mqar import MQARSource
from zoo_core.data.windows import WindowSource
from zoo_core.defaults.blocks import PreNormBlock, PreNormBlockConfig
from zoo_core.loop.model import LanguageModel
from zoo_core.registry import Entry, get_registry
from zoo_core.testing import check_block, check_mixer
from zoo_core.testing.build import ProbeConfig, ProbeMixer


class NoResetsMixer(ProbeMixer):
    supports_resets = False


class IgnoresResetsMixer(ProbeMixer):
    """Claims resets and takes the keywords, but carries the state across documents."""

    def forward(self, x, state=None, return_state=False, resets=None):
        return super().forward(x, state, return_state)

    def step(self, x, state, reset=None):
        return super().step(x, state)


class ForgetsResetsInStep(ProbeMixer):
    def step(self, x, state, reset=None):
        return super().step(x, state)


class StreamOnlyBlock(PreNormBlock):
    def forward(self, x, state=None, return_state=False):
        return super().forward(x, state, return_state)


class NoDocumentsSource(MQARSource):
    reports_documents = False

    def batch(self, stream_ids):
        return super().batch(stream_ids)[:2]


def _entry(kind, name, factory, config_cls=None):
    return Entry(kind, name, factory, config_cls, "a test " + kind[:-1], "tests", "tests", "0")


@pytest.fixture
def registered(monkeypatch):
    """Test components in the process registry, as a plugin would register them."""
    reg = get_registry()
    from zoo_core.data.mqar import MQARConfig

    for kind, name, factory, cls in (
        ("mixers", "probe", ProbeMixer, ProbeConfig),
        ("mixers", "noresets", NoResetsMixer, ProbeConfig),
        ("blocks", "streamonly", StreamOnlyBlock, PreNormBlockConfig),
        ("data", "nodocs", NoDocumentsSource, MQARConfig),
    ):
        monkeypatch.setitem(reg._items[kind], name, _entry(kind, name, factory, cls))
    return reg


@pytest.fixture(scope="module")
def documents_corpus(tmp_path_factory):
    """Overrides for a generated corpus of many short documents (jsonl rows of 10-80 bytes), prepared once."""
    import json
    import random

    from zoo_core.data.synthetic import random_text, vocabulary

    rng = random.Random(3)
    words = vocabulary(rng)
    root = tmp_path_factory.mktemp("documents")
    src = root / "src.jsonl"
    rows = (json.dumps({"text": random_text(rng, rng.randint(10, 80), words)}) for _ in range(600))
    src.write_text("\n".join(rows) + "\n")
    return [f"data.source.path={src}", f"data.cache_dir={root / 'cache'}", "data.source.val_fraction=0.2"]


def _files(path):
    return sorted(p for p in path.rglob("*"))


# -- the key and the refusals --------------------------------------------------------------


def test_documents_is_a_checked_choice_and_stream_by_default(capsys):
    from zoo_core.config import load_config

    assert load_config(None, []).data.documents == "stream"
    assert load_config(None, ["data.documents=reset"]).data.documents == "reset"
    assert main(["config", "data.documents=resets"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "data.documents=resets is not one of stream, reset" in err


@pytest.mark.parametrize(
    "overrides,says",
    [
        (["model.mixer=noresets"], "mixer 'noresets' does not support document resets"),
        (["model.pattern=[probe, noresets]"], "mixer 'noresets' does not support document resets"),
        (["model.mixer=probe", "model.block=streamonly"], "block 'streamonly' cannot pass resets"),
        (
            ["model.mixer=probe", "data.source.name=nodocs", "data.seq_len=64"],
            "data source 'nodocs' does not report document starts",
        ),
    ],
)
def test_reset_is_refused_in_one_line_before_anything_is_written(
    registered, tmp_path, tiny_overrides, capsys, overrides, says
):
    before = _files(tmp_path)
    code = main(["train", *tiny_overrides, *overrides, "data.documents=reset"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("zoo: data.documents=reset: ") and err.count("\n") == 0, err
    assert says in err and "use data.documents=stream" in err
    assert _files(tmp_path) == before  # no run directory, no config.yaml
    if "mixer" in says:
        assert "probe" in err  # names the mixers that do support resets


def test_data_prepared_without_the_document_index_is_refused_before_training(
    registered, tmp_path, tiny_overrides, documents_corpus, capsys
):
    import json

    from zoo_core.data.prepare import prepare
    from zoo_core.tokenizers import ByteTokenizer

    src = documents_corpus[0].split("=", 1)[1]
    old = prepare(src, ByteTokenizer(), tmp_path / "data" / "old", progress=False)
    manifest = json.loads((old / "manifest.json").read_text())
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            del shard["index"], shard["index_sha256"]  # as a directory prepared before the index
    (old / "manifest.json").write_text(json.dumps(manifest))
    before = _files(tmp_path)
    args = [*tiny_overrides, "model.mixer=probe", f"data.source.path={old}", "data.documents=reset"]
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo: data.documents=reset: ") and err.count("\n") == 0, err
    assert "records no document boundaries" in err and "zoo data prepare" in err
    assert _files(tmp_path) == before


def test_the_refused_mixers_train_under_stream(registered, tiny_overrides, tmp_path):
    from zoo_core.train import train

    out = train(None, [*tiny_overrides, "model.mixer=noresets", "train.steps=2", "train.sample_tokens=0"])
    assert out["step"] == 2


# -- the loop ------------------------------------------------------------------------------


@pytest.fixture
def spy(monkeypatch):
    """Every call of the model's forward: (rows, whether resets= was given, the resets)."""
    calls = []
    original = LanguageModel.forward

    def forward(self, tokens, targets, *args, **kw):
        calls.append((tokens.clone(), "resets" in kw, kw.get("resets")))
        return original(self, tokens, targets, *args, **kw)

    monkeypatch.setattr(LanguageModel, "forward", forward)
    return calls


@pytest.mark.parametrize("carry", [False, True])
def test_reset_passes_the_source_starts_in_training_and_evaluation(
    registered, spy, tiny_overrides, tmp_path, carry, documents_corpus
):
    import yaml

    from zoo_core.train import train

    args = [*tiny_overrides, "model.mixer=probe", "data.documents=reset", "train.sample_tokens=4"]
    mqar = ["data.source.name=mqar", "data.seq_len=64"]
    out = train(None, [*args, *mqar, "train.steps=3", f"train.carry_state={carry}"])
    assert out["step"] == 3 and out["sample"]
    saved = yaml.safe_load((tmp_path / "t" / "config.yaml").read_text())
    assert saved["data"]["documents"] == "reset"  # the run config records it
    assert spy and all(given for _, given, _ in spy)  # training and the final evaluation
    for tokens, _, resets in spy:
        assert resets.dtype == torch.bool and resets.shape == tokens.shape
        assert resets[:, 0].all() and not resets[:, 1:].any()  # mqar: a window is a document

    # A corpus: the starts are the source's, batch for batch.
    from zoo_core.loop.components import build_source, build_tokenizer
    from zoo_core.loop.train import run_config

    spy.clear()
    train(None, [a.replace("name=t", "name=c") for a in args] + documents_corpus + ["train.steps=2"])
    cfg = run_config(str(tmp_path / "c"), [])
    source = build_source(cfg, get_registry(), build_tokenizer(cfg, get_registry()), "train", 4, progress=False)
    for tokens, given, resets in spy[:2]:
        x, _, starts = source.batch(range(4))
        assert given and torch.equal(tokens, x) and torch.equal(resets, starts)
        assert starts[:, 1:].any()  # documents begin inside the windows


def test_stream_never_passes_the_keyword(registered, spy, tiny_overrides):
    from zoo_core.train import train

    train(None, [*tiny_overrides, "model.mixer=probe", "train.steps=2"])
    assert spy and not any(given for _, given, _ in spy)


def test_eval_under_reset_masks_like_training(registered, tiny_overrides, tmp_path, documents_corpus):
    """bits/byte of a reset run: the evaluation sees the same document starts as training did."""
    import json

    from zoo_core.train import train

    args = [*tiny_overrides, *documents_corpus, "model.mixer=probe", "data.documents=reset", "train.steps=2"]
    train(None, args)
    path = tmp_path / "e.json"
    assert main(["eval", str(tmp_path / "t"), "--splits", "val", "--batches", "2", "--json", str(path), "--quiet"]) == 0
    reset = json.loads(path.read_text())["splits"]["val"]
    (tmp_path / "t" / "config.yaml").write_text(
        (tmp_path / "t" / "config.yaml").read_text().replace("documents: reset", "documents: stream")
    )
    assert main(["eval", str(tmp_path / "t"), "--splits", "val", "--batches", "2", "--json", str(path), "--quiet"]) == 0
    stream = json.loads(path.read_text())["splits"]["val"]
    assert reset["tokens"] == stream["tokens"] and reset["bpb"] != stream["bpb"]


# -- compare -------------------------------------------------------------------------------


def test_compare_rows_differing_only_in_documents_are_two_runs(registered, tmp_path):
    from zoo_core.compare import load_spec, plan

    spec = tmp_path / "docs.yaml"
    spec.write_text(
        "budget: 1000 tokens\n"
        "base: {model.dim: 16, model.n_layers: 1, data.seq_len: 16}\n"
        "architectures:\n"
        "  probe: {model.mixer: probe}\n"
        "  probe-reset: {model.mixer: probe, data.documents: reset}\n"
    )
    runs = plan(load_spec(str(spec)), get_registry())
    assert [r.arch for r in runs] == ["probe", "probe-reset"]
    assert runs[0].identity != runs[1].identity and runs[0].name != runs[1].name


def test_a_stream_run_keeps_the_identity_it_had_before_the_key(registered):
    """data.documents=stream (the default) is left out of the hash: finished comparisons are reused."""
    from omegaconf import OmegaConf

    from zoo_core.compare import Budget, run_identity
    from zoo_core.config import load_config, resolve

    cfg = resolve(load_config(None, ["model.mixer=probe"]), get_registry())
    budget = Budget(1000.0, "tokens")
    with_key = run_identity(cfg, budget)
    before_the_key = OmegaConf.to_container(cfg)
    before_the_key["data"].pop("documents")
    assert run_identity(before_the_key, budget) == with_key
    cfg.data.documents = "reset"
    assert run_identity(cfg, budget) != with_key


# -- the document-reset check --------------------------------------------------------------


def _statuses(report):
    return {r.check: (r.status, r.reason) for r in report.results}


def test_the_check_passes_a_mixer_that_resets_and_a_block_around_it():
    for report in (check_mixer(ProbeMixer, ProbeConfig()), check_block(PreNormBlock, config_cls=PreNormBlockConfig)):
        got = _statuses(report)
        assert got["document resets"][0] == "pass", got["document resets"]
        assert got["step with resets"][0] == "pass", got["step with resets"]


def test_the_check_fails_a_mixer_that_ignores_resets():
    got = _statuses(check_mixer(IgnoresResetsMixer, ProbeConfig()))
    assert got["document resets"][0] == "fail" and "packed documents differ" in got["document resets"][1]
    assert got["step with resets"][0] == "pass"  # consistent with its forward: only packing catches it
    got = _statuses(check_mixer(ForgetsResetsInStep, ProbeConfig()))
    assert got["document resets"][0] == "pass" and got["step with resets"][0] == "fail"


def test_a_mixer_without_resets_is_listed_as_not_supported_not_failed():
    report = check_mixer(NoResetsMixer, ProbeConfig())
    got = _statuses(report)
    for check in ("document resets", "step with resets"):
        assert got[check] == ("skip", "resets: not supported (supports_resets = False)")
    assert report.ok


def test_a_mixer_that_resets_only_at_t0_fails():
    """The packed layout catches a mixer that honours a reset only at the first position."""

    @dataclasses.dataclass
    class Cfg(ProbeConfig):
        pass

    class FirstOnly(ProbeMixer):
        def forward(self, x, state=None, return_state=False, resets=None):
            if resets is not None:
                first = resets.clone()
                first[:, 1:] = False
                resets = first
            return super().forward(x, state, return_state, resets)

    got = _statuses(check_mixer(FirstOnly, Cfg()))
    assert got["document resets"][0] == "fail"


def test_zoo_check_lists_the_document_checks(registered, capsys):
    assert main(["check", "probe"]) == 0
    out = capsys.readouterr().out
    assert "document resets" in out and "step with resets" in out
    assert main(["check", "noresets"]) == 0
    assert "resets: not supported" in capsys.readouterr().out


@dataclasses.dataclass
class EosConfig:
    offset: int = 0


class EosSource(WindowSource):
    """Windows of text-like ids with an EOS (the byte tokenizer's 257) inside, as a corpus has."""

    reports_documents = True

    def __init__(self, config, *, seq_len, n_streams, **_):
        self.T, self.position = seq_len, [0] * n_streams

    def row(self, stream, k):
        x = (torch.arange(self.T) + 7 * stream + k) % 256
        x[5] = 257
        starts = torch.zeros(self.T, dtype=torch.bool)
        starts[0] = k == 0
        return x, x.roll(-1).clamp(max=255), self.mark(starts)

    def mark(self, starts):
        starts[6] = True
        return starts

    def state_dict(self):
        return {"position": list(self.position)}

    def load_state_dict(self, state):
        self.position = list(state["position"])


class MissesEos(EosSource):
    def mark(self, starts):
        return starts


class TwoTensors(MQARSource):
    def batch(self, stream_ids):
        return super().batch(stream_ids)[:2]


def test_the_data_kit_checks_the_starts():
    from zoo_core.data.mqar import MQARConfig
    from zoo_core.testing import check_data_source

    good = _statuses(check_data_source(EosSource, EosConfig()))
    assert good["documents"][0] == "pass" and "one after each EOS" in good["documents"][1]
    assert good["resume"][0] == "pass" and "and starts" in good["resume"][1]
    bad = _statuses(check_data_source(MissesEos, EosConfig()))
    assert bad["documents"][0] == "fail" and "follows an EOS (257)" in bad["documents"][1]
    bad = _statuses(check_data_source(TwoTensors, MQARConfig(vocab=64, num_kv_pairs=2)))
    assert bad["batches"][0] == "fail" and "want 3" in bad["batches"][1]


def test_generation_marks_the_prompt_as_one_document_under_reset(registered, tiny_overrides, tmp_path, monkeypatch):
    from zoo_core.loop.generate import generate
    from zoo_core.loop.runs import load_run
    from zoo_core.train import train

    train(None, [*tiny_overrides, "model.mixer=probe", "data.documents=reset", "train.steps=1"])
    calls = []
    original = LanguageModel.logits

    def logits(self, tokens, *args, **kw):
        calls.append(kw.get("resets"))
        return original(self, tokens, *args, **kw)

    monkeypatch.setattr(LanguageModel, "logits", logits)
    run = load_run(tmp_path / "t", device="cpu")
    assert run.model.documents == "reset"
    prompts = [[65, 66, 67], [68, 69]]
    marked = generate(run.model, prompts, 4, temperature=0)
    assert calls[-1].tolist() == [[True, False], [True, False]]  # the common prefix, first token marked
    plain = generate(run.model, prompts, 4, temperature=0, documents="stream")
    assert calls[-1] is None
    assert marked == plain  # the probe's reset at a fresh state is its plain first token
