"""Evaluation batteries beyond the loop's own val loss: the lm-evaluation-harness adapter."""
