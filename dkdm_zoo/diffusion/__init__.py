"""Schedule math and samplers, vectorised over per-sample timesteps."""

from dkdm_zoo.diffusion.schedule import NoiseSchedule

__all__ = ["NoiseSchedule"]
