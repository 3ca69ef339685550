"""Metric mirrors beside metrics.jsonl, registered through `register_trackers`
(`zoo_core.trackers.plugin` is the default plugin holding TensorBoard and wandb).
Both are optional (pip install 'zoo-core[logging]') and imported only when asked for."""


def tag(key: str) -> str:
    """The hierarchical name a metrics.jsonl key is mirrored under: `val_bpb` -> `val/bpb`,
    `loss` -> `train/loss` (TensorBoard and wandb group their charts by the part before '/')."""
    if key.startswith("val_"):
        return "val/" + key[len("val_") :]
    return key if "/" in key else "train/" + key
