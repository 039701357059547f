"""The noise processes, vectorised over per-sample timesteps: the discrete variance-preserving chain
(``NoiseSchedule``: noise tables, posteriors, DDPM/DDIM steps) and the rectified-flow path
(``FlowSchedule``); ``schedule_for(spec)`` gives a teacher's."""

from __future__ import annotations

from typing import Any

from dkdm_zoo.diffusion.flow import FlowSchedule
from dkdm_zoo.diffusion.schedule import NoiseSchedule

__all__ = ["FlowSchedule", "NoiseSchedule", "schedule_for"]


def schedule_for(spec: Any) -> NoiseSchedule | FlowSchedule:
    """The noise process a ``TeacherSpec`` describes."""
    return FlowSchedule.from_spec(spec) if spec.process == "flow" else NoiseSchedule.from_spec(spec)
