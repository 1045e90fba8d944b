"""Evaluation: task adapters and metrics, the scoring loop, robustness under shifts."""
