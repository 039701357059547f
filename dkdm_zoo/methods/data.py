"""Standard diffusion training (the data baseline and the reference teachers) and its shared pieces.

``DenoisingTraining`` is the textbook loss on a tensor of clean samples: random t, q(x_t | x_0),
eps MSE (+ IDDPM's hybrid vlb term for a learned-variance student). ``DataTraining`` feeds it a
real dataset; ``synthetic.Synthetic`` feeds it teacher samples. For data training the teacher is
usually the network-free ``spec`` teacher (dkdm_zoo.teachers.spec_only): shape, schedule and
conditioning are all a student, this method and the engine need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dkdm_zoo.errors import UserError
from dkdm_zoo.methods.base import (
    STUDENT,
    Logs,
    Method,
    MethodOptions,
    Passes,
    Plan,
    SetupContext,
    drop_refs,
    student_eps,
)
from dkdm_zoo.methods.losses import vlb_term
from dkdm_zoo.registry.options import UnitInterval
from dkdm_zoo.teachers.base import Teacher, host_to_device


# -- standard diffusion training --------------------------------------------------------------------------
@dataclass(frozen=True)
class DenoisingOptions(MethodOptions):
    cond_drop_prob: UnitInterval = 0.0  # conditions replaced by the null one (to learn guidance)
    vlb: bool = True  # IDDPM's hybrid vlb term for a learned-variance student
    # "uniform": a level of the teacher's chain; "logit-normal": s = sigmoid(N(0, 1)), SD3's draw of
    # the noise level on a flow path (flow-matching teachers only)
    time_sampling: Literal["uniform", "logit-normal"] = "uniform"


class DenoisingTraining(Method):
    """Eps-prediction training on clean samples ``self.samples`` (in the teacher's diffusion space)."""

    Options: type[DenoisingOptions] = DenoisingOptions
    supports_flow = True  # on a flow-matching path the student learns the velocity noise - x0

    def __init__(self, teacher: Teacher, student: nn.Module, **options: Any):
        super().__init__(teacher, student)
        self.options = self.Options(**options)
        if self.options.time_sampling == "logit-normal" and teacher.spec.process != "flow":
            raise UserError(
                "method.time_sampling = 'logit-normal' draws levels of a flow-matching path; a VP chain's "
                "levels are its timesteps: leave it at 'uniform'"
            )
        self.samples: Tensor | None = None
        self.sample_refs: np.ndarray | None = None  # condition references, one per sample (host)

    def _check_samples(self, samples: Tensor, where: str) -> None:
        if tuple(samples.shape[1:]) != tuple(self.teacher.spec.sample_shape):
            raise UserError(
                f"{where}: samples of shape {tuple(samples.shape[1:])} do not match the teacher spec {self.teacher.spec.sample_shape}"
            )

    def loss(self, student: nn.Module, batch_size: int, step: int) -> tuple[Tensor, Logs]:
        assert self.samples is not None, "setup() must load or generate the training samples"
        gen, spec, schedule = self.generator, self.teacher.spec, self.teacher.schedule
        idx = self.host_rng.integers(0, len(self.samples), batch_size)
        x0 = self.samples[host_to_device(idx, self.samples.device)].to(self.device).float()
        if self.options.time_sampling == "logit-normal":  # a continuous level s of the flow path
            z = torch.randn((batch_size,), generator=gen, device=gen.device)
            t = (torch.sigmoid(z) * spec.num_train_timesteps).to(self.device)
        else:  # a level of the teacher's chain, as its networks read it
            k = torch.randint(0, spec.num_train_timesteps, (batch_size,), generator=gen, device=gen.device)
            t = schedule.time_of(k.to(self.device))
        noise = torch.randn(x0.shape, generator=gen, device=gen.device).to(self.device)
        x_t = schedule.add_noise(x0, noise, t)
        refs = None if self.sample_refs is None else self.sample_refs[idx]
        refs = drop_refs(self.teacher, refs, self.options.cond_drop_prob, self.host_rng)
        cond = self.teacher.conditions_from_refs(refs)
        eps, var = student_eps(student, x_t, t, cond.to(self.device) if cond else None, spec.channels)
        target = noise - x0 if spec.process == "flow" else noise  # the velocity on a flow path, else eps
        mse = F.mse_loss(eps.float(), target)
        logs: Logs = {"mse": mse.detach()}
        loss = mse
        if var is not None and self.options.vlb:
            vb = vlb_term(schedule, x0, x_t, t, eps, var).mean()
            loss = loss + vb
            logs["vb"] = vb.detach()
        return loss, logs


@dataclass(frozen=True)
class DataOptions(DenoisingOptions):
    dataset: str = "digits"  # "digits" or a folder of images
    cond_drop_prob: UnitInterval = 0.1


class DataTraining(DenoisingTraining):
    """Diffusion training on a real dataset ("digits" or an image folder) at the spec's resolution."""

    Options = DataOptions
    options: DataOptions

    def setup(self, ctx: SetupContext) -> None:
        super().setup(ctx)
        device = ctx.device
        from dkdm_zoo.datasets import load_dataset  # the dataset is reloaded (deterministically) on resume

        spec = self.teacher.spec
        if spec.space != "pixel":
            raise UserError("method 'data' trains pixel-space models only (no encoder for latent teachers)")
        data = load_dataset(self.options.dataset, spec.resolution, channels=spec.channels)
        if hasattr(data, "tensors"):
            images, labels = data.tensors
        else:  # an image folder: small enough to hold in memory for this project's scale
            items = [data[i] for i in range(len(data))]
            images = torch.stack([img for img, _ in items])
            labels = torch.as_tensor([lab for _, lab in items])
        images = torch.as_tensor(images).float()
        self._check_samples(images, f"dataset {self.options.dataset!r}")
        self.samples = images.to(device)
        self.sample_refs = None
        if spec.conditioning == "class":
            refs = None if labels is None else torch.as_tensor(labels).long().numpy()
            if refs is None or (refs < 0).any():
                raise UserError(
                    f"dataset {self.options.dataset!r} has unlabelled images but the teacher spec is class-conditional"
                )
            self.sample_refs = refs
        elif spec.conditioning == "text":
            raise UserError("method 'data' does not support text conditioning")

    def plan(self, batch_size: int, steps: int, grad_accum: int = 1) -> Plan:
        return Plan(passes={STUDENT: Passes(1, 1)})
