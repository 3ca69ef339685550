"""The core's trackers: a default plugin (zoo_core.registry.DEFAULT_PLUGINS). The tracker
modules import TensorBoard or wandb only when a run asks for them."""

from zoo_core import hookimpl
from zoo_core.trackers.tensorboard import TensorBoardTracker
from zoo_core.trackers.wandb import WandbTracker

zoo_api = 1


@hookimpl
def register_trackers(register):
    register(
        "tensorboard", TensorBoardTracker, None, "TensorBoard events under RUN/tensorboard (train.tensorboard=true)"
    )
    register("wandb", WandbTracker, None, "Weights & Biases, offline or online (train.wandb=true)")
