"""FSDP2 on one gloo rank, wrapped as `zoo_core.loop.parallelize` wraps blocks."""

from __future__ import annotations

import contextlib
import copy
import tempfile
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn

from zoo_core.testing.build import rel_err
from zoo_core.testing.report import Skip


@contextlib.contextmanager
def one_rank_group() -> Iterator[None]:
    """A world-size-1 gloo group for the duration of the check, torn down after, so
    the rest of the process does not believe it is distributed."""
    if not dist.is_available():
        raise Skip("torch.distributed is not available in this torch build")
    if dist.is_initialized():
        raise Skip("a process group is already initialised; run the kit outside torchrun")
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()


def check_fsdp_matches(module: nn.Module, run: Callable[[nn.Module], Tensor], tol: float = 1e-5) -> str:
    """Shard a copy of `module` with `fully_shard` and compare the output of `run` and
    the gradient of every parameter with the unsharded original."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    with one_rank_group():
        sharded = copy.deepcopy(module)
        fully_shard(sharded, mesh=init_device_mesh("cpu", (1,), mesh_dim_names=("shard",)))
        y_ref, y = run(module), run(sharded)
        err = rel_err(y, y_ref)
        assert err < tol, f"forward under fully_shard differs from the plain module (rel err {err:.2e})"
        g = torch.randn_like(y_ref)
        (y_ref * g).sum().backward()
        (y * g).sum().backward()
        ref_grads = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
        for n, p in sharded.named_parameters():
            if n not in ref_grads:
                continue
            assert p.grad is not None, f"parameter {n} gets no gradient under fully_shard"
            grad = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
            err = rel_err(grad, ref_grads[n])
            assert err < tol, f"gradient of {n} under fully_shard differs (rel err {err:.2e})"
    return "fully_shard on 1 gloo rank: forward and grads match"
