"""Parallelism applied from outside the model code, as in torchtitan.

Order: activation checkpointing, torch.compile per block, FSDP2 `fully_shard`
per block and then at the root; all on the meta device. Only then are the
parameters allocated (`to_empty`) and initialised, from one full copy built on
rank 0, so every world size starts from bit-identical weights.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from zoo_core.errors import UserError
from zoo_core.loop.cpu.linear import apply_cpu_linear
from zoo_core.loop.distributed import World

#: Methods besides `forward` that run parameters: FSDP must unshard around them too.
ROOT_METHODS = ("hidden", "logits", "step")
BLOCK_METHODS = ("step",)


def apply_activation_checkpointing(model: nn.Module, mode: str) -> None:
    """full: recompute every block in backward; selective: every other block."""
    if mode == "none":
        return
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for i, block in enumerate(model.layers):
        if mode == "full" or (mode == "selective" and i % 2 == 0):
            model.layers[i] = checkpoint_wrapper(block, preserve_rng_state=False)


def use_cpu_linear(model: nn.Module, mode: str, say: bool = True) -> None:
    """oneDNN or aten for CPU float32 linears (zoo_core/loop/cpu/linear.py); one line when oneDNN cannot run."""
    why_not = apply_cpu_linear(model, mode, say)
    if why_not and say:
        print(f"zoo: parallel.cpu_linear={mode}: {why_not}; linear layers use torch's BLAS", file=sys.stderr)


def cpu_bf16_note() -> str | None:
    """One line when bf16 on this CPU will be slower than fp32 (no AMX, no AVX512-BF16), else None."""
    from zoo_core.loop.cpu.tune import cpu_info, describe, has_bf16_units

    info = cpu_info()
    if has_bf16_units(info):
        return None
    return (
        f"zoo: parallel.mixed_precision=bf16 on a CPU without bf16 matrix units ({describe(info)}; no AMX, "
        "no AVX512-BF16): bf16 matmuls are converted to fp32 and back, slower than fp32; "
        "parallel.mixed_precision=none is faster here"
    )


_bf16_warned = False


def warn_cpu_bf16(say: bool = True) -> None:
    """Print `cpu_bf16_note` once per process, where there is one."""
    global _bf16_warned
    note = cpu_bf16_note()
    if note and say and not _bf16_warned:
        print(note, file=sys.stderr)
        _bf16_warned = True


def apply_compile(model: nn.Module) -> None:
    # Per block: every block has the same structure, so one compilation serves all.
    for block in model.layers:
        block.compile()


def fsdp_mesh(world: World, mode: str):
    from torch.distributed.device_mesh import init_device_mesh

    dev = world.device.type
    if mode == "full_shard":
        return init_device_mesh(dev, (world.size,), mesh_dim_names=("shard",))
    if mode == "no_shard":  # replicate: every rank holds whole parameters
        return init_device_mesh(dev, (world.size, 1), mesh_dim_names=("replicate", "shard"))
    # hybrid: shard within a node, replicate across nodes
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world.size))
    if world.size % per_node:
        raise UserError(
            f"parallel.fsdp=hybrid needs the same number of processes on every node "
            f"(world size {world.size}, {per_node} on this node); use full_shard"
        )
    return init_device_mesh(dev, (world.size // per_node, per_node), mesh_dim_names=("replicate", "shard"))


def apply_fsdp(model: nn.Module, world: World, mode: str, mixed_precision: str) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    mesh = fsdp_mesh(world, mode)
    # bf16 compute, fp32 master weights, fp32 gradient reduction.
    mp = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if mixed_precision == "bf16"
        else MixedPrecisionPolicy()
    )
    for block in model.layers:
        fully_shard(block, mesh=mesh, mp_policy=mp)
        for name in BLOCK_METHODS:
            if hasattr(block, name):
                register_fsdp_forward_method(block, name)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    for name in ROOT_METHODS:
        if hasattr(model, name):
            register_fsdp_forward_method(model, name)


def parallelize(model: nn.Module, cfg: Any, world: World) -> nn.Module:
    """Wrap a model still on the meta device; `materialize` allocates and initialises it."""
    if world.device.type == "cpu":
        use_cpu_linear(model, cfg.cpu_linear, say=world.is_main)
        if cfg.mixed_precision == "bf16":
            warn_cpu_bf16(say=world.is_main)
    apply_activation_checkpointing(model, cfg.activation_checkpointing)
    if cfg.compile:
        apply_compile(model)
    if world.distributed:
        apply_fsdp(model, world, cfg.fsdp, cfg.mixed_precision)
    return model


def materialize(model: nn.Module, build_full: Callable[[], nn.Module], world: World) -> nn.Module:
    """Allocate the (sharded) parameters and fill them with the weights of `build_full()`.

    `build_full` returns an initialised, unsharded copy on the CPU; only rank 0
    calls it. DTensor random init would give different numbers at each world
    size, so the full copy is the single source and each rank keeps its shard.
    """
    model.to_empty(device=world.device)
    if not world.distributed:
        full = build_full()
        model.load_state_dict(full.state_dict(), strict=True)
        _copy_buffers(model, _nonpersistent_buffers(full))
        return model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    full = build_full() if world.is_main else None
    state = full.state_dict() if full is not None else {}
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    # Buffers outside the state dict (rotary tables, masks) are not sharded: send them whole.
    _copy_buffers(model, world.broadcast_object(_nonpersistent_buffers(full) if full is not None else {}))
    return model


def _nonpersistent_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    persistent = set(model.state_dict())
    return {name: buf for name, buf in model.named_buffers() if name not in persistent}


def _copy_buffers(model: nn.Module, buffers: dict[str, torch.Tensor]) -> None:
    # checkpoint_wrapper prefixes module names; the state dict hides it, named_buffers does not.
    mine = {k.replace("_checkpoint_wrapped_module.", ""): v for k, v in model.named_buffers()}
    with torch.no_grad():
        for name, value in buffers.items():
            mine[name].copy_(value.to(mine[name].device))
