"""Old module paths, kept working: one table, one meta-path finder.

zoo_core was one flat package; its modules now live in rooms (docs/architecture.md).
`import zoo_core.train`, `from zoo_core.runs import load_run`, `monkeypatch.setattr(
"zoo_core.train.X", ...)`, pickles naming an old path and `python -m zoo_core.train`
all reach the module at its new path: the alias *is* that module object
(`zoo_core.train is zoo_core.loop.train`), so there is only ever one copy of it.
This module imports nothing from zoo_core: it is part of the contracts.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

#: old name -> new name. docs/architecture.md lists the same table.
ALIASES: dict[str, str] = {
    "zoo_core.train": "zoo_core.loop.train",
    "zoo_core.checkpoint": "zoo_core.loop.checkpoint",
    "zoo_core.runs": "zoo_core.loop.runs",
    "zoo_core.distributed": "zoo_core.loop.distributed",
    "zoo_core.parallelize": "zoo_core.loop.parallelize",
    "zoo_core.model": "zoo_core.loop.model",
    "zoo_core.optim": "zoo_core.loop.optim",
    "zoo_core.metrics": "zoo_core.loop.metrics",
    "zoo_core.validate": "zoo_core.loop.validate",
    "zoo_core.components": "zoo_core.loop.components",
    "zoo_core.evaluate": "zoo_core.loop.evaluate",
    "zoo_core.generate": "zoo_core.loop.generate",
    "zoo_core.cpu_memory": "zoo_core.loop.cpu.memory",
    "zoo_core.cpu_linear": "zoo_core.loop.cpu.linear",
    "zoo_core.cpu_peak": "zoo_core.loop.cpu.peak",
    "zoo_core.cpu_tune": "zoo_core.loop.cpu.tune",
    "zoo_core.blocks": "zoo_core.defaults.blocks",
    "zoo_core.losses": "zoo_core.defaults.losses",
    "zoo_core.lm_eval_adapter": "zoo_core.eval.lm_eval_adapter",
}


class _AliasLoader(importlib.abc.Loader):
    """Hands out the target module itself; for `python -m OLD`, the target's code."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        # The import system stamped the alias's spec on the shared module object: put its own back.
        module.__spec__ = self._spec

    # runpy (`python -m zoo_core.train`) asks for these.
    def _target_loader(self):
        return importlib.util.find_spec(self.target).loader

    def get_code(self, fullname):
        return self._target_loader().get_code(self.target)

    def get_source(self, fullname):
        return self._target_loader().get_source(self.target)

    def is_package(self, fullname) -> bool:
        return False

    def get_filename(self, fullname):
        return self._target_loader().get_filename(self.target)


class AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = ALIASES.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))


def install() -> None:
    if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, AliasFinder())
