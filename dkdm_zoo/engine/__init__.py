"""The shared training engine: one loop for every method (accelerate, atomic checkpoints, run dir)."""

from dkdm_zoo.engine.trainer import NonFiniteLossError, TrainResult, train

__all__ = ["NonFiniteLossError", "TrainResult", "train"]
