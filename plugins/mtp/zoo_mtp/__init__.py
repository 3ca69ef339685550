"""zoo-mtp: registers the `mtp` loss/head (multi-token prediction)."""

from zoo_core import hookimpl
from zoo_mtp.head import MTPConfig, MTPHead

zoo_api = 1


@hookimpl
def register_losses(register):
    register(
        "mtp",
        MTPHead,
        MTPConfig,
        "multi-token prediction: n future-token heads, sequential per-head backward, head 1 for eval",
    )
