"""Parallelism applied from outside the model code, as in torchtitan:
activation checkpointing, torch.compile per block, then FSDP2 per block and at the root."""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from zoo_core.distributed import World


def apply_activation_checkpointing(model: nn.Module, mode: str) -> None:
    if mode == "none":
        return
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
    for i, block in enumerate(model.layers):
        if mode == "full" or (mode == "selective" and i % 2 == 0):
            model.layers[i] = checkpoint_wrapper(block, preserve_rng_state=False)


def apply_compile(model: nn.Module) -> None:
    for block in model.layers:
        block.compile()


def fsdp_mesh(world: World, mode: str):
    from torch.distributed.device_mesh import init_device_mesh
    dev = world.device.type
    if mode == "full_shard":
        return init_device_mesh(dev, (world.size,), mesh_dim_names=("shard",))
    if mode == "no_shard":  # replicate: every rank holds whole parameters
        return init_device_mesh(dev, (world.size, 1), mesh_dim_names=("replicate", "shard"))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world.size))  # hybrid: shard within a node
    return init_device_mesh(dev, (world.size // per_node, per_node), mesh_dim_names=("replicate", "shard"))


def apply_fsdp(model: nn.Module, world: World, mode: str, mixed_precision: str) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mesh = fsdp_mesh(world, mode)
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
          if mixed_precision == "bf16" else MixedPrecisionPolicy())
    for block in model.layers:
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)


def parallelize(model: nn.Module, cfg: Any, world: World) -> nn.Module:
    apply_activation_checkpointing(model, cfg.activation_checkpointing)
    if cfg.compile:
        apply_compile(model)
    if world.distributed:
        apply_fsdp(model, world, cfg.fsdp, cfg.mixed_precision)
    return model
