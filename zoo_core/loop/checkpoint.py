"""DCP checkpoints, written atomically; consolidated safetensors export.

Layout of `checkpoints/step-00000200/`:
* `*.distcp` + `.metadata`: the DCP shards of the model and optimizer. Any
  number of processes can load them (DCP reshards on load).
* `meta.json`: step, world size, global batch, sequence length.
* per rank, `extra-r{rank}.json` (step, data-loader position, stream layout)
  and `extra-r{rank}.safetensors` (RNG states, carried recurrent state).

Everything is written into `.tmp-step-*` and renamed once every rank has
finished, so a process killed mid-save leaves the previous checkpoint as the
latest intact one; the leftover is removed on the next start. The newest
`keep` checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from zoo_core.errors import UserError
from zoo_core.loop.distributed import World

STEP_DIR = re.compile(r"^step-(\d{8})$")


def step_dirs(ckpt_root: Path) -> list[Path]:
    if not Path(ckpt_root).is_dir():
        return []
    return sorted(p for p in Path(ckpt_root).iterdir() if p.is_dir() and STEP_DIR.match(p.name))


def latest(ckpt_root: Path) -> Path | None:
    dirs = step_dirs(Path(ckpt_root))
    return dirs[-1] if dirs else None


def read_meta(path: Path) -> dict[str, Any]:
    path = Path(path)
    for name in ("meta.json", "extra-r0.json"):  # extra-r0.json: written before meta.json existed
        if (path / name).exists():
            try:
                meta = json.loads((path / name).read_text())
                if isinstance(meta, dict) and isinstance(meta.get("step"), int):
                    return meta
            except (ValueError, UnicodeDecodeError):
                pass
            raise UserError(f"{path / name} is corrupted; {_move_away(path)}")
    raise UserError(f"{path} is not a zoo checkpoint (no meta.json); delete it or point at another run")


def _move_away(path: Path) -> str:
    return (
        f"move the checkpoint away (mv {path} {path.parent / ('bad-' + path.name)}) to resume from "
        f"the one before it, or start again with another name="
    )


def _write(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(
    ckpt_root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    world: World,
    extra: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    keep: int = 2,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Collective: every rank calls it. Returns the final directory."""
    ckpt_root = Path(ckpt_root)
    final = ckpt_root / f"step-{step:08d}"
    tmp = ckpt_root / f".tmp-step-{step:08d}"
    if world.is_main:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    world.barrier()
    try:
        if optimizer is not None:
            msd, osd = get_state_dict(model, optimizer)
            dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(tmp))  # fsyncs its files
        else:
            dcp.save({"model": get_model_state_dict(model)}, checkpoint_id=str(tmp))
    except CheckpointException as exc:  # a BaseException: unwrap the rank's own error
        raise _unwrap(exc, tmp) from None
    _write(tmp / f"extra-r{world.rank}.json", json.dumps({**extra, "world_size": world.size}).encode())
    tensor_file = tmp / f"extra-r{world.rank}.safetensors"
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tensor_file))
    except OSError:
        raise
    except Exception as exc:  # safetensors reports the OS error as text: "... (os error 28) ..."
        code = re.search(r"os error (\d+)", str(exc))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(tensor_file)) from None
    with tensor_file.open("rb") as fh:
        os.fsync(fh.fileno())
    world.barrier()  # every rank's files are on disk
    if world.is_main:
        _write(tmp / "meta.json", json.dumps({"step": step, "world_size": world.size, **(meta or {})}).encode())
        if final.exists():  # the same step again: swap, never leave a moment without it
            old = ckpt_root / f".old-step-{step:08d}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(ckpt_root)
        for stale in step_dirs(ckpt_root)[:-keep] if keep > 0 else []:
            shutil.rmtree(stale, ignore_errors=True)
    world.barrier()
    return final


def load(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, world: World
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore model and optimizer in place (collective); return this rank's extras."""
    path = Path(path)
    extra_json = path / f"extra-r{world.rank}.json"
    if not extra_json.exists():
        raise UserError(
            f"{path} has no training state for rank {world.rank}; resume with the world size "
            f"that wrote it ({read_meta(path).get('world_size')} processes)"
        )
    try:
        if optimizer is not None:
            msd, osd = get_state_dict(model, optimizer)
            state = {"model": msd, "optim": osd}
            dcp.load(state, checkpoint_id=str(path))
            set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        else:
            load_model(path, model)
        extra = json.loads(extra_json.read_text())
        tensors = load_file(str(path / f"extra-r{world.rank}.safetensors"))
    except UserError:
        raise
    except (Exception, CheckpointException) as exc:  # truncated shards, a torn JSON, another model's tensors
        raise UserError(
            f"{path} cannot be loaded ({_first_line(exc)}): it is damaged or belongs to another "
            f"model; {_move_away(path)}"
        ) from None
    return extra, tensors


def _unwrap(exc: BaseException, where: Path) -> Exception:
    """The OSError (or other error) a rank hit inside DCP, as an ordinary exception."""
    from zoo_core.errors import find_disk_error

    disk = find_disk_error(exc)
    if disk is not None:
        if not disk.filename:
            disk.filename = str(where)
        return disk
    return RuntimeError(f"writing {where} failed: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def load_model(path: Path, model: torch.nn.Module) -> None:
    """Model weights only, in any process count (DCP reshards on load)."""
    state = {"model": get_model_state_dict(model)}
    try:
        dcp.load(state, checkpoint_id=str(path))  # reads only the model's keys, resharded to this process
        set_model_state_dict(model, state["model"], options=StateDictOptions(strict=True))
    except (Exception, CheckpointException) as exc:
        raise UserError(
            f"{path} cannot be loaded ({_first_line(exc)}): it is damaged or belongs to another "
            f"model; {_move_away(path)}"
        ) from None


def clean_partial(ckpt_root: Path) -> None:
    """Remove leftovers of a save that was interrupted."""
    if Path(ckpt_root).is_dir():
        for p in list(Path(ckpt_root).glob(".tmp-step-*")) + list(Path(ckpt_root).glob(".old-step-*")):
            shutil.rmtree(p, ignore_errors=True)
