"""Bad input, written from docs/config.md: every case ends in one line on stderr, no
traceback, the documented exit status, and nothing on disk changed.

Driven in-process through `zoo_core.cli.main` (a subprocess costs ~3 s of imports).
"""

import hashlib
import shutil
from pathlib import Path

import pytest

from zoo_core.cli import main
from zoo_core.config import RANGES, load_config, resolve
from zoo_core.errors import UserError
from zoo_core.registry import get_registry
from zoo_core.validate import check_request

TINY = [
    "name=t",
    "model.dim=32",
    "model.n_layers=2",
    "data.seq_len=32",
    "train.global_batch=4",
    "train.steps=2",
    "train.eval_every=0",
    "train.eval_batches=1",
    "train.eval_batch_size=4",
    "train.sample_tokens=0",
    "train.progress=false",
    "optim.warmup_steps=1",
]


def snapshot(root: Path):
    """Every file under root with its content hash (and the directories)."""
    if not root.exists():
        return None
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
        for p in sorted(root.rglob("*"))
    }


def one_line(capsys, code, expected_code=2, contains=""):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == expected_code, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("zoo: "), err
    assert contains in lines[0], err
    return lines[0]


# -- every numeric field at 0, -1 and huge ------------------------------------------------


def _cases():
    for key, (_low, _high, _) in RANGES.items():
        for value in ("0", "-1", "1000000000000000000000000000000", "nan"):
            yield key, value


@pytest.mark.parametrize("key,value", list(_cases()))
def test_numeric_field_is_refused_in_one_line_or_accepted_whole(key, value, tmp_path, capsys):
    args = [f"runs_dir={tmp_path}"] + TINY + [f"{key}={value}"]
    try:
        cfg = resolve(load_config(None, args), get_registry())
        check_request(cfg, get_registry())
    except UserError:
        # Refused: the CLI says the same in one line, exit 2, and creates nothing.
        line = one_line(capsys, main(["train"] + args), 2)
        assert key.split(".")[-1] in line or "model" in line or "memory" in line, line
        assert list(tmp_path.iterdir()) == []
        return
    # Accepted: it is inside the documented range.
    low, high, _ = RANGES[key]
    number = float(value)
    assert number >= low and (high is None or number <= high), (key, value, cfg)


def test_values_at_zero_that_are_valid_train_without_error(tmp_path, capsys):
    zeros = [
        "optim.lr=0",
        "optim.warmup_steps=0",
        "optim.weight_decay=0",
        "optim.grad_clip=0",
        "optim.beta1=0",
        "optim.beta2=0",
        "optim.lr_min_ratio=0",
        "train.seed=0",
        "train.eval_every=0",
        "train.ckpt_every=0",
        "train.keep_checkpoints=0",
        "train.sample_tokens=0",
        "train.threads=0",
    ]
    assert main(["train", f"runs_dir={tmp_path}"] + TINY + zeros) == 0
    assert (tmp_path / "t" / "checkpoints" / "step-00000002").is_dir()
    assert main(["train", f"runs_dir={tmp_path}"] + TINY + ["name=z", "train.steps=0"]) == 0
    assert (tmp_path / "z" / "checkpoints" / "step-00000000").is_dir()


@pytest.mark.parametrize(
    "override,contains",
    [
        ("model.mixer.head_dim=0", "cannot be built"),
        ("model.mixer.head_dim=-1", "cannot be built"),
        ("model.mixer.n_kv_heads=3", "cannot be built"),
        ("model.mixer.backend=cuda-only", "cannot be built"),
        ("train.micro_batch=3", "not a multiple"),
        ("model.vocab_size=10", "smaller than the tokenizer"),
        ("model.dim=1048576", "does not fit"),
        ("model.n_layers=100000", "does not fit"),
    ],
)
def test_model_that_cannot_be_built_or_held_is_refused_before_allocation(override, contains, tmp_path, capsys):
    one_line(capsys, main(["train", f"runs_dir={tmp_path}"] + TINY + [override]), 2, contains)
    assert list(tmp_path.iterdir()) == []


# -- wrong types, malformed overrides and YAML --------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["model.dim=abc"],
        ["model.dim=3.5"],
        ["train.steps=[1,2]"],
        ["model.mixer=5"],
        ["model.pattern=5"],
        ["model.pattern=[]"],
        ["model.pattern=[{window: 4}]"],
        ["data.sources=5"],
        ["model.mixer.window=abc"],
        ["train.deterministic=maybe"],
        ["=5"],
        ["model.dim"],
        ["model..dim=3"],
        ["model.dim={"],
        ["model={dim: x}"],
        ["parallel.fsdp=sharded"],
        ["model.preset=nosuch"],
        ["data.tokenizer.name=nosuch"],
        ["model.block=nosuch"],
        ["data.source.path=/nonexistent/corpus"],
        ["data.source.verify=sometimes"],
        ["train.steps=true"],
    ],
)
def test_wrong_types_and_malformed_overrides_are_one_line(args, tmp_path, capsys):
    one_line(capsys, main(["train", f"runs_dir={tmp_path}"] + TINY + args), 2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "text",
    [
        "model: [unclosed\n",
        "- a\n- list\n",
        "model: 3\n",
        "model:\n  dim: abc\n",
        "\x00\x01\x02binary",
        "model:\n\tdim: 3\n",
        "model:\n  dim: 32\n  dim: 64\n",
        "just a string",
        "model: {mixer: {name: attention, n_head: 2}}\n",
        "train:\n  steps: -5\n",
    ],
)
def test_malformed_yaml_is_one_line(text, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    before = snapshot(tmp_path)
    one_line(capsys, main(["train", str(cfg), f"runs_dir={tmp_path / 'runs'}"]), 2)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--nproc", "x"],
        ["train", "--nproc", "0"],
        ["train", "--frobnicate"],
        ["eval"],
        ["generate"],
        ["launch", "--nodes", "0", "model.dim=32"],
        ["check", "--dim", "x"],
        ["nosuch"],
        ["data", "verify", "/nonexistent"],
        ["tokenizer", "info", "nosuch"],
        ["list", "widgets"],
    ],
)
def test_bad_command_lines_are_one_line(argv, capsys):
    one_line(capsys, main(argv), 2)


def test_options_and_overrides_in_any_order(tmp_path, capsys):
    """`--nproc 1` after, between or before the overrides: the same run."""
    assert main(["train", f"runs_dir={tmp_path}", *TINY, "--nproc", "1", "train.steps=1"]) == 0
    assert main(["train", "--nproc", "1", f"runs_dir={tmp_path}", *TINY, "name=u", "train.steps=1"]) == 0
    assert (tmp_path / "t" / "checkpoints" / "step-00000001").is_dir()
    assert (tmp_path / "u" / "checkpoints" / "step-00000001").is_dir()


# -- a refused command changes nothing in an existing run ----------------------------------


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    dst = tmp_path / "runs" / "t"
    shutil.copytree(tiny_run, dst)
    return dst


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "{run}", "model.dim=64"],
        ["train", "{run}", "model.mixer.head_dim=8"],
        ["launch", "{run}", "model.dim=64", "--local"],
        ["launch", "{run}", "model.dim=64"],
        ["train", "{run}", "--nproc", "2"],
        ["launch", "{run}", "--local", "--nproc", "2"],
        ["train", "{run}", "train.global_batch=0"],
    ],
)
def test_refused_command_leaves_the_run_unchanged(argv, run_copy, capsys):
    before = snapshot(run_copy)
    one_line(capsys, main([a.format(run=run_copy) for a in argv]), 2)
    assert snapshot(run_copy) == before


# -- run directories and checkpoints that are damaged or from elsewhere ---------------------


def _ckpt(run):
    return sorted((run / "checkpoints").glob("step-*"))[-1]


@pytest.mark.parametrize(
    "damage",
    [
        "truncate_shard",
        "empty_meta",
        "garbage_meta",
        "drop_metadata",
        "truncate_extra",
        "garbage_extra_json",
        "no_meta_at_all",
    ],
)
def test_damaged_checkpoint_is_one_line_and_the_run_unchanged(damage, run_copy, capsys):
    ck = _ckpt(run_copy)
    if damage == "truncate_shard":
        shard = sorted(ck.glob("*.distcp"))[0]
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])
    elif damage == "empty_meta":
        (ck / "meta.json").write_text("")
    elif damage == "garbage_meta":
        (ck / "meta.json").write_text('{"step": ')
    elif damage == "drop_metadata":
        (ck / ".metadata").unlink()
    elif damage == "truncate_extra":
        f = ck / "extra-r0.safetensors"
        f.write_bytes(f.read_bytes()[:10])
    elif damage == "garbage_extra_json":
        (ck / "extra-r0.json").write_text("not json")
    elif damage == "no_meta_at_all":
        (ck / "meta.json").unlink()
        (ck / "extra-r0.json").unlink()
    before = snapshot(run_copy)
    # Resuming needs every part: refused in one line, naming the checkpoint.
    line = one_line(capsys, main(["train", str(run_copy), "train.steps=5"]), 2)
    assert ck.name in line or "not a zoo checkpoint" in line, line
    assert snapshot(run_copy) == before
    # Reading the weights needs only the DCP shards: it works, or it is refused in one line.
    for argv in (
        ["generate", str(run_copy), "--max-tokens", "2"],
        ["export", str(run_copy), "--out", str(run_copy.parent / "x")],
    ):
        code = main(argv)
        err = capsys.readouterr().err
        assert "Traceback" not in err and (code == 0 or (code == 2 and len(err.strip().splitlines()) == 1)), err
        assert snapshot(run_copy) == before


def test_run_directory_from_another_version_is_one_line(run_copy, capsys):
    cfg = run_copy / "config.yaml"
    cfg.write_text(cfg.read_text() + "future_section:\n  knob: 1\n")
    before = snapshot(run_copy)
    for argv in (["train", str(run_copy)], ["generate", str(run_copy)], ["launch", str(run_copy), "--local"]):
        one_line(capsys, main(argv), 2, "unknown config key 'future_section'")
    assert snapshot(run_copy) == before


def test_checkpoint_from_another_world_size_is_refused_before_anything(run_copy, capsys):
    meta = _ckpt(run_copy) / "meta.json"
    meta.write_text(meta.read_text().replace('"world_size": 1', '"world_size": 2'))
    before = snapshot(run_copy)
    one_line(capsys, main(["train", str(run_copy), "train.steps=5"]), 2, "--nproc 2")
    assert snapshot(run_copy) == before


def test_not_a_run_directory(tmp_path, capsys):
    for cmd in ("eval", "generate", "export"):
        one_line(capsys, main([cmd, str(tmp_path)]), 2, "not a run directory")
    (tmp_path / "config.yaml").write_text("model: {dim: 32}\n")
    one_line(capsys, main(["eval", str(tmp_path)]), 2, "no checkpoint yet")


# -- data shards ---------------------------------------------------------------------------


@pytest.fixture
def prepared(tmp_path, capsys):
    src = tmp_path / "corpus.txt"
    src.write_text("".join(f"line {i} of a tiny corpus for the fault tests.\n" for i in range(400)))
    out = tmp_path / "prep"
    assert main(["data", "prepare", str(src), "--out", str(out)]) == 0
    capsys.readouterr()
    return out


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest"])
def test_missing_or_corrupted_shards_are_one_line(damage, prepared, tmp_path, capsys):
    shard = sorted(prepared.rglob("*.bin"))[0]
    if damage == "flip":
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:7])
    elif damage == "delete":
        shard.unlink()
    else:
        (prepared / "manifest.json").write_text("{")
    before = snapshot(prepared)
    one_line(
        capsys,
        main(
            ["train", f"runs_dir={tmp_path / 'runs'}", *TINY, f"data.source.path={prepared}", "data.source.verify=full"]
        ),
        2,
    )
    assert snapshot(prepared) == before
    assert not (tmp_path / "runs" / "t" / "checkpoints").exists()


def test_docs_list_every_range():
    from zoo_core.config import _range_text

    text = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()
    for key in RANGES:
        assert f"| `{key}` | {_range_text(key)} |" in text, key


@pytest.mark.parametrize(
    "text", ["- [optim.lr=1e-3\n", "just text\n", "- 5\n", "- [optim.lr=-1]\n", "- [model.dimm=3]\n"]
)
def test_bad_sweep_files_are_one_line_and_write_nothing(text, tmp_path, capsys):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(text)
    one_line(capsys, main(["launch", f"runs_dir={tmp_path / 'runs'}", *TINY, "--sweep", str(sweep)]), 2)
    assert not (tmp_path / "runs").exists()


def test_throughput_refuses_a_model_that_does_not_fit(capsys):
    one_line(capsys, main(["throughput", "model.dim=1048576", "model.n_layers=64"]), 2, "does not fit")


def test_duplicate_plugin_name_fails_only_the_commands_that_resolve_it(monkeypatch, tmp_path, capsys):
    from zoo_core.registry import Entry

    reg = get_registry()
    a = Entry("mixers", "twin", object, None, "", "pa", "zoo-twin-a", "1")
    b = Entry("mixers", "twin", object, None, "", "pb", "zoo-twin-b", "1")
    monkeypatch.setitem(reg._conflicts["mixers"], "twin", [a, b])
    assert main(["list", "mixers"]) == 0  # a command that does not resolve it works
    capsys.readouterr()
    line = one_line(capsys, main(["train", f"runs_dir={tmp_path}", *TINY, "model.mixer.name=twin"]), 2)
    assert "zoo-twin-a and zoo-twin-b" in line and "ZOO_PREFER" in line
    one_line(capsys, main(["check", "twin"]), 2, "zoo-twin-a and zoo-twin-b")
    assert list(tmp_path.iterdir()) == []


def test_check_with_every_check_skipped_exits_1_saying_why(capsys):
    from zoo_core.testing import check_names

    code = main(["check", "attention", "--quiet", "--skip", ",".join(check_names())])
    err = capsys.readouterr().err
    assert code == 1 and "no check ran" in err and "skipped on request" in err and "Traceback" not in err


def test_every_torch_load_in_the_source_is_weights_only():
    """docs/guarantees.md: zoo never unpickles with torch.load(weights_only=False)."""
    import re

    root = Path(__file__).resolve().parents[1]
    calls = []
    for path in (
        list(root.glob("zoo_core/**/*.py"))
        + list(root.glob("plugins/*/zoo_*/**/*.py"))
        + list(root.glob("kernels/zoo_kernels/**/*.py"))
    ):
        for m in re.finditer(r"torch\.load\(([^)]*)\)", path.read_text()):
            calls.append((path, m.group(1)))
    assert all("weights_only=True" in args for _, args in calls), calls
