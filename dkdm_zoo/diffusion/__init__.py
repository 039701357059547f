"""Schedule math, vectorised over per-sample timesteps: noise tables, posteriors, DDPM/DDIM steps."""

from dkdm_zoo.diffusion.schedule import NoiseSchedule

__all__ = ["NoiseSchedule"]
