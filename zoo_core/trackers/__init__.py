"""Metric mirrors beside metrics.jsonl, registered through `register_trackers`
(`zoo_core.trackers.plugin` is the default plugin holding TensorBoard and wandb).
Both are optional (pip install 'zoo-core[logging]') and imported only when asked for."""
