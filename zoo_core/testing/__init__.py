"""The zoo conformance kit: the checks every mixer, block, loss and data source must pass.

    from zoo_core.testing import check_mixer
    check_mixer(MyMixer, MyConfig()).raise_for_failures()

Each `check_*` returns a `Report` (a table of passed/failed/skipped checks with
reasons). `zoo check NAME` runs the same checks on an installed plugin, and the
pytest plugin (`zoo_core.testing.pytest_plugin`) offers them as fixtures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from zoo_core.testing.component import Component
from zoo_core.testing.report import CheckResult, Report, Skip

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "check_mixer",
    "check_block",
    "check_loss",
    "check_data_source",
    "check_registered",
    "check_target",
    "checkable_names",
    "check_names",
    "Report",
    "CheckResult",
    "Skip",
    "CHECKED_KINDS",
]

#: Registry kinds the kit knows how to check.
CHECKED_KINDS = ("mixers", "blocks", "losses", "data")


def _config(config: Any, config_cls: type | None, options: dict | None, name: str):
    from zoo_core.testing.build import make_config

    if config is not None:
        return config, config_cls or (type(config) if dataclasses.is_dataclass(config) else None)
    return make_config(config_cls, options, name), config_cls


class Subject(TypedDict, total=False):
    """The keywords every `check_*` takes after its sizes: `config_cls` (plus optional `options`,
    as a config file gives them) builds the config when none is given, and `name` labels the
    report (default: the factory's `__name__`)."""

    config_cls: type | None
    options: dict | None
    name: str | None


def _component(kind: str, factory: Callable, config: Any, subject: Subject) -> Component:
    unknown = sorted(set(subject) - set(Subject.__annotations__))
    if unknown:
        raise TypeError(f"the {kind} checks take no keyword {', '.join(unknown)}")
    name = subject.get("name") or getattr(factory, "__name__", kind)
    config, config_cls = _config(config, subject.get("config_cls"), subject.get("options"), name)
    return Component(f"{kind} {name}", factory, config, config_cls)


def check_mixer(
    factory: Callable,
    config: Any = None,
    *,
    dim: int = 32,
    seq_len: int = 16,
    batch: int = 2,
    skip: Sequence[str] = (),
    **subject: Unpack[Subject],
) -> Report:
    """Every mixer check. `factory(dim, config)` builds the mixer (usually its class);
    give `config` (a dataclass instance) or `config_cls` plus optional `options`."""
    from zoo_core.testing.sequence import SequenceChecks

    c = _component("mixer", factory, config, subject)
    build = lambda d: factory(d, c.config)  # noqa: E731
    return SequenceChecks(c.label, build, c.config, c.config_cls, dim, seq_len, batch).run(skip)


def check_block(
    factory: Callable,
    config: Any = None,
    *,
    mixer: tuple[Callable, Any] | None = None,
    dim: int = 32,
    seq_len: int = 16,
    batch: int = 2,
    skip: Sequence[str] = (),
    **subject: Unpack[Subject],
) -> Report:
    """Block checks, with `mixer=(factory, config)` inside (default: the kit's probe mixer)."""
    from zoo_core.testing.build import ProbeConfig, ProbeMixer
    from zoo_core.testing.sequence import SequenceChecks

    c = _component("block", factory, config, subject)
    mixer_factory, mixer_config = mixer or (ProbeMixer, ProbeConfig())
    build = lambda d: factory(d, mixer_factory(d, mixer_config), c.config, 0, 2)  # noqa: E731
    return SequenceChecks(c.label, build, c.config, c.config_cls, dim, seq_len, batch).run(skip)


def check_loss(
    factory: Callable,
    config: Any = None,
    *,
    dim: int = 32,
    vocab: int = 64,
    seq_len: int = 16,
    batch: int = 2,
    skip: Sequence[str] = (),
    **subject: Unpack[Subject],
) -> Report:
    """Loss/head checks: HeadOutput with a finite loss, logits shape, gradients."""
    from zoo_core.testing.heads import HeadChecks

    return HeadChecks(_component("loss", factory, config, subject), dim, vocab, seq_len, batch).run(skip)


def check_data_source(
    factory: Callable,
    config: Any = None,
    *,
    tokenizer: Any = None,
    seq_len: int = 16,
    n_streams: int = 2,
    cache_dir: str | None = None,
    skip: Sequence[str] = (),
    **subject: Unpack[Subject],
) -> Report:
    """Data source checks: batch shapes, JSON state_dict resume, stream independence."""
    from zoo_core.testing.data import DataChecks

    c = _component("data", factory, config, subject)
    return DataChecks(c, tokenizer, seq_len, n_streams, cache_dir).run(skip)


_BY_KIND = {"mixers": check_mixer, "blocks": check_block, "losses": check_loss, "data": check_data_source}


def check_registered(kind: str, name: str, options: dict | None = None, registry: Any = None, **kwargs: Any) -> Report:
    """Run the kit on a registered item, built from its registered factory and config class."""
    from zoo_core.registry import get_registry

    entry = (registry or get_registry()).get(kind, name)
    if kind not in _BY_KIND:
        raise ValueError(f"the kit checks {', '.join(CHECKED_KINDS)}, not {kind}")
    if kind != "data":
        kwargs.pop("cache_dir", None)
    return _BY_KIND[kind](entry.factory, config_cls=entry.config_cls, options=options, name=name, **kwargs)


def check_names() -> list[str]:
    """Every check's name, for `skip=`."""
    from zoo_core.testing import data, heads, sequence

    return sorted(set(sequence.CHECKS) | set(heads.CHECKS) | set(data.CHECKS))


def checkable_names(kind: str, registry: Any = None) -> list[str]:
    """Registered names of one kind, e.g. for `pytest.mark.parametrize`."""
    from zoo_core.registry import get_registry

    return (registry or get_registry()).names(kind)


def check_target(target: str | None, registry: Any = None) -> list[tuple[str, str]]:
    """(kind, name) pairs that `zoo check TARGET` covers: TARGET is a registered name, a
    plugin (entry-point) name or a distribution; None means everything installed."""
    from zoo_core.errors import UserError, did_you_mean
    from zoo_core.registry import get_registry

    reg = registry or get_registry()
    everything = [(k, n) for k in CHECKED_KINDS for n in reg.names(k)]
    if target is None:
        return everything
    by_name = [(k, n) for k, n in everything if n == target]
    if by_name:
        return by_name
    for k in CHECKED_KINDS:
        if target in reg.conflicts(k):
            reg.get(k, target)  # raises: registered twice, naming both distributions
    norm = lambda s: s.lower().replace("_", "-")  # noqa: E731  (PyPI names compare this way)
    # A distribution may hold several plugins (zoo-core holds one default plugin per kind).
    matched = [info for info in reg.plugins.values() if target == info.name or norm(target) == norm(info.distribution)]
    if matched:
        pairs = [(k, n) for info in matched for k in CHECKED_KINDS for n in info.registered.get(k, [])]
        if not pairs:
            info = matched[0]
            raise UserError(
                f"plugin '{info.name}' ({info.distribution}) registers no {'/'.join(CHECKED_KINDS)} to check"
            )
        return pairs
    if target in reg.failed:
        raise UserError(f"plugin '{target}' did not load: {reg.failed[target]}")
    known = sorted({n for _, n in everything} | set(reg.plugins) | {i.distribution for i in reg.plugins.values()})
    raise UserError(
        f"nothing named '{target}' is installed{did_you_mean(target, known)}; give a mixer/block/"
        f"loss/data name, a plugin or a distribution (zoo plugins lists them)"
    )
