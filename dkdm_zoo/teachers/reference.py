"""The reference teachers: small diffusion models trained on scikit-learn's 8x8 digits, shipped in
``dkdm_zoo/assets/<name>/`` in their diffusers family layouts and loaded by the family loaders.

They exist so distillation can be shown end to end without downloads; each folder's MODEL_CARD.md
says how it was trained (``python tools/train_reference_teachers.py <name>``) and how good it is.
``PixelDiT`` is the student-contract wrapper the DiT teacher is trained as.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffusers import ConfigMixin, DiTTransformer2DModel, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor

from dkdm_zoo.errors import UserError
from dkdm_zoo.registry.options import takes_options
from dkdm_zoo.students.base import broadcast_timesteps, labels_or_null
from dkdm_zoo.teachers.loading import TeacherOptions

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def asset_folder(name: str) -> Path:
    """The shipped folder of reference teacher ``name``, or a one-line error naming the command that trains it."""
    folder = ASSETS / name
    if not any((folder / name).is_file() for name in ("model_index.json", "config.json")):
        raise UserError(
            f"reference teacher '{name}' is not shipped in {folder}: train it with "
            f"`python tools/train_reference_teachers.py {name}`"
        )
    return folder


@takes_options(TeacherOptions)
def digits_ddpm(options: TeacherOptions) -> Any:
    """The unconditional digits UNet (DDPMPipeline folder) through the `ddpm-unet` loader."""
    from dkdm_zoo.teachers import ddpm_unet

    return ddpm_unet.load(path=asset_folder("digits-ddpm"), **options.to_dict())


@takes_options(TeacherOptions)
def digits_flow(options: TeacherOptions) -> Any:
    """The unconditional rectified-flow digits UNet (a flat UNet2DModel + FlowMatchEuler folder) through `ddpm-unet`."""
    from dkdm_zoo.teachers import ddpm_unet

    return ddpm_unet.load(path=asset_folder("digits-flow"), **options.to_dict())


@dataclass(frozen=True)
class DigitsDiTOptions(TeacherOptions):
    guidance_scale: float | None = 3.0  # the scale its model card measures (99.7% class accuracy)


@takes_options(DigitsDiTOptions)
def digits_dit(options: DigitsDiTOptions) -> Any:
    """The class-conditional pixel-space digits DiT (DiTPipeline folder without vae/) through the `dit` loader."""
    from dkdm_zoo.teachers import dit

    return dit.load(path=asset_folder("digits-dit"), **options.to_dict())


class PixelDiT(ModelMixin, ConfigMixin):
    """A diffusers ``DiTTransformer2DModel`` behind the student contract (plain tensor out, null label
    when ``class_labels`` is None), so the engine can train it; ``.transformer`` is what ships."""

    @register_to_config
    def __init__(
        self,
        sample_size: int = 8,
        in_channels: int = 1,
        out_channels: int = 2,
        num_classes: int = 10,
        patch_size: int = 2,
        hidden_size: int = 128,
        depth: int = 4,
        num_heads: int = 4,
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise UserError(f"PixelDiT: hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
        self.transformer = DiTTransformer2DModel(
            num_attention_heads=num_heads,
            attention_head_dim=hidden_size // num_heads,
            in_channels=in_channels,
            out_channels=out_channels,
            num_layers=depth,
            sample_size=sample_size,
            patch_size=patch_size,
            num_embeds_ada_norm=num_classes,  # + 1 row: the null label (index num_classes)
        )

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | int,
        class_labels: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
    ) -> Tensor:
        if encoder_hidden_states is not None:
            raise ValueError("PixelDiT is class-conditional: encoder_hidden_states must be None")
        batch, device = sample.shape[0], sample.device
        t = broadcast_timesteps(timestep, batch, device)
        labels = labels_or_null(class_labels, self.config.num_classes, batch, device)
        return self.transformer(sample, timestep=t, class_labels=labels).sample
