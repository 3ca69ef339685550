"""DCP checkpoints, written atomically.

Layout: `checkpoints/step-00000200/` holds the DCP shards of the model and
optimizer (any world size can load them: DCP reshards) plus, per rank,
`extra-r{rank}.json` (step, data-loader state) and `extra-r{rank}.safetensors`
(RNG states, carried recurrent state). Everything is written into
`.tmp-step-*` first and renamed once complete, so a crash mid-save leaves the
previous checkpoint as the latest intact one.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from zoo_core.distributed import World

STEP_DIR = re.compile(r"^step-(\d{8})$")


def step_dirs(ckpt_root: Path) -> List[Path]:
    if not ckpt_root.is_dir():
        return []
    return sorted(p for p in ckpt_root.iterdir() if p.is_dir() and STEP_DIR.match(p.name))


def latest(ckpt_root: Path) -> Optional[Path]:
    dirs = step_dirs(Path(ckpt_root))
    return dirs[-1] if dirs else None


def _fsync_tree(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with p.open("rb") as fh:
                os.fsync(fh.fileno())


def save(ckpt_root: Path, step: int, model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer],
         world: World, extra: Dict[str, Any], tensors: Dict[str, torch.Tensor], keep: int = 2) -> Path:
    ckpt_root = Path(ckpt_root)
    final = ckpt_root / f"step-{step:08d}"
    tmp = ckpt_root / f".tmp-step-{step:08d}"
    if world.is_main:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    world.barrier()
    if optimizer is not None:
        msd, osd = get_state_dict(model, optimizer)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(tmp))
    else:
        msd, _ = get_state_dict(model, [])
        dcp.save({"model": msd}, checkpoint_id=str(tmp))
    (tmp / f"extra-r{world.rank}.json").write_text(json.dumps({**extra, "world_size": world.size}))
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
              str(tmp / f"extra-r{world.rank}.safetensors"))
    _fsync_tree(tmp) if world.is_main else None
    world.barrier()
    if world.is_main:
        if final.exists():  # re-saving the same step (e.g. a signal right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in step_dirs(ckpt_root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    world.barrier()
    return final


def load(path: Path, model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer], world: World
         ) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """Restore model (and optimizer) in place; return this rank's extras."""
    path = Path(path)
    if optimizer is not None:
        msd, osd = get_state_dict(model, optimizer)
        state = {"model": msd, "optim": osd}
        dcp.load(state, checkpoint_id=str(path))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    else:
        load_model(path, model)
    extra_json = path / f"extra-r{world.rank}.json"
    if not extra_json.exists():
        return {}, {}
    extra = json.loads(extra_json.read_text())
    tensors = load_file(str(path / f"extra-r{world.rank}.safetensors"))
    return extra, tensors


def load_model(path: Path, model: torch.nn.Module) -> None:
    """Model weights only, in any process count (DCP reshards on load)."""
    msd, _ = get_state_dict(model, [])
    state = {"model": msd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, [], model_state_dict=state["model"], options=StateDictOptions(strict=True))


def clean_partial(ckpt_root: Path) -> None:
    """Remove leftovers of a save that was interrupted."""
    if Path(ckpt_root).is_dir():
        for p in Path(ckpt_root).glob(".tmp-step-*"):
            shutil.rmtree(p, ignore_errors=True)
