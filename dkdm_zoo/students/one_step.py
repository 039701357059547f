"""One-step generators for BOOT: any student backbone as g(eps, t, condition) -> signal y_t.

The wrapper records the backbone's class and config, so ``OneStepGenerator.from_pretrained``
rebuilds any architecture (plugins included) without the registry; the recorded class is imported
only from diffusers, dkdm_zoo or an installed plugin (``dkdm_zoo.registry.classes``), checked first.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from dkdm_zoo.registry.classes import class_reference, model_from_reference, public_config
from dkdm_zoo.students.base import condition_kwargs


class OneStepGenerator(ModelMixin, ConfigMixin):
    """A student backbone used as a one-step generator: images = x0(backbone(s * z, t_gen)), one call.

    ``forward`` is the raw backbone (first ``channels`` output channels); ``generate`` maps noise
    to samples in the teacher's diffusion space with the parameterisation the method trained:

    - BOOT (the defaults): g(eps, t) is the signal y_t = (x_t - sigma_t eps) / alpha_t of the
      teacher's DDIM trajectory from eps, so samples are g(z, 0) (``prediction_type`` "sample").
    - SiD / Diff-Instruct: the backbone sees z scaled to the noise level of ``timestep``
      (``input_scale`` = sigma_t of the VP schedule) and its output, read as the teacher's
      ``prediction_type`` with that timestep's ``alpha``/``sigma``, gives x0.
    """

    @register_to_config
    def __init__(
        self,
        backbone_class: str,
        backbone_config: dict[str, Any],
        channels: int,
        input_scale: float = 1.0,
        timestep: int | float = 0,
        prediction_type: str = "sample",
        alpha: float = 1.0,
        sigma: float = 0.0,
    ):
        super().__init__()
        where = "the one-step generator's config (backbone_class)"
        self.backbone = model_from_reference(backbone_class, backbone_config, where=where)
        self.channels = channels

    @classmethod
    def wrap(cls, backbone: ModelMixin, channels: int, **generation: Any) -> OneStepGenerator:
        """A generator around ``backbone`` itself (no second copy; a teacher-network backbone keeps its
        binding to the teacher's calling code)."""
        from accelerate import init_empty_weights

        with init_empty_weights():  # the config's backbone is built on the meta device, then replaced
            generator = cls(class_reference(backbone), public_config(backbone.config), channels, **generation)
        generator.backbone = backbone
        return generator

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor,
        class_labels: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
    ) -> Tensor:
        return self.backbone(sample, timestep, **condition_kwargs(class_labels, encoder_hidden_states))[
            :, : self.channels
        ]

    def generator_input(self, noise: Tensor) -> tuple[Tensor, Tensor]:
        """The backbone's input for noise z and its timestep: (input_scale * z, t_gen)."""
        cfg = self.config
        # an int is a VP chain's timestep; a float a flow-matching teacher's s T
        dtype = torch.long if isinstance(cfg.timestep, int) else torch.float32
        t = torch.full((noise.shape[0],), cfg.timestep, dtype=dtype, device=noise.device)
        return noise * cfg.input_scale, t

    def to_sample(self, output: Tensor, backbone_input: Tensor) -> Tensor:
        cfg = self.config
        return output_to_x0(output, backbone_input, cfg.alpha, cfg.sigma, cfg.prediction_type)

    @torch.no_grad()
    def generate(
        self, noise: Tensor, class_labels: Tensor | None = None, encoder_hidden_states: Tensor | None = None
    ) -> Tensor:
        """One network evaluation: a sample in the teacher's diffusion space from noise z."""
        x_in, t = self.generator_input(noise)
        out = self(x_in, t, class_labels=class_labels, encoder_hidden_states=encoder_hidden_states)
        return self.to_sample(out, x_in)


def is_one_step(model: nn.Module) -> bool:
    """Whether a student is a one-step generator (sampled in one network call per image): the one
    answer every part asks, from the student's type."""
    return isinstance(model, OneStepGenerator)


def output_to_x0(output: Tensor, x_in: Tensor, alpha: float, sigma: float, prediction_type: str) -> Tensor:
    """x0 from a network output at input ``x_in`` = alpha x0 + sigma eps, for any prediction type."""
    if prediction_type == "sample":
        return output
    if prediction_type == "epsilon":
        return (x_in - sigma * output) / alpha
    if prediction_type == "v_prediction":
        return alpha * x_in - sigma * output
    if prediction_type == "flow":  # a velocity eps - x0 on the path x = (1 - s) x0 + s eps, sigma = s
        return x_in - sigma * output
    raise ValueError(f"unknown prediction type {prediction_type!r}")


def load_matching_weights(target: nn.Module, source: nn.Module) -> float:
    """Initialise ``target`` from ``source`` when EVERY target tensor has a match (name up to a
    wrapper prefix, and shape); otherwise leave ``target`` untouched.

    Returns the fraction of the target's tensors that matched (1.0 means the copy was made); used
    to initialise a generator from its teacher when the architectures agree, as BOOT does.
    """
    by_suffix: dict[str, Tensor] = {}
    for key, value in source.state_dict().items():
        parts = key.split(".")
        for i in range(len(parts)):
            by_suffix.setdefault(".".join(parts[i:]), value)
    target_state = target.state_dict()
    matched: dict[str, Tensor] = {}
    for key, value in target_state.items():
        parts = key.split(".")
        suffixes = (".".join(parts[i:]) for i in range(len(parts)))
        match = next((by_suffix[sfx] for sfx in suffixes if sfx in by_suffix), None)
        if match is not None and match.shape == value.shape:
            matched[key] = match.to(value.dtype).clone()
    fraction = len(matched) / max(len(target_state), 1)
    if fraction == 1.0:
        target.load_state_dict(matched)
    return fraction


#: the ``init_from_teacher`` option of one-step methods: "auto" (copy when the architecture matches),
#: true (require it) or false
InitFromTeacher = Literal["auto"] | bool


def init_from_teacher_weights(student: nn.Module, teacher: Any, mode: InitFromTeacher = "auto") -> float:
    """Copy the teacher network's weights into ``student`` when every tensor matches.

    ``mode`` True requires the match (a user error otherwise), "auto" copies when it can and leaves
    the student untouched otherwise, False never copies. Returns the matched fraction.
    """
    from dkdm_zoo.errors import UserError

    if mode is False:  # the method's options checked the value: "auto", True or False
        return 0.0
    from dkdm_zoo.students.teacher_net import TeacherNetwork

    if isinstance(student, TeacherNetwork):  # `--student teacher`: made from the teacher already
        return 1.0
    fraction = load_matching_weights(student, teacher.denoiser()) if teacher.modules() else 0.0
    if fraction == 1.0:
        import sys

        total = len(student.state_dict())
        print(
            f"init_from_teacher: copied {total} of {total} tensors from the teacher's network",
            file=sys.stderr,
        )
    if fraction < 1.0 and mode != "auto":
        raise UserError(
            f"init_from_teacher: the student matches only {fraction:.0%} of the teacher's tensors; "
            "use the teacher's architecture or set method.init_from_teacher=false"
        )
    return fraction
