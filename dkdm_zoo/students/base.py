"""What every student shares: presets, compatibility checks, conditioning embeddings, description.

Plugins import these helpers from ``dkdm_zoo.toolkit`` (the documented, stable surface; see
CONTRIBUTING.md, "The student contract"); ``check_student`` in ``dkdm_zoo.students.contract``
tests a model against the contract. The student contract (every registered student factory honours it):

- ``build(spec: TeacherSpec, preset: str = "small", **overrides) -> nn.Module`` returns a diffusers
  ``ModelMixin`` + ``ConfigMixin`` network, so ``save_pretrained``/``from_pretrained`` round-trip it.
- ``forward(sample, timestep, class_labels=None, encoder_hidden_states=None) -> Tensor`` of shape
  (B, spec.out_channels, H, W): eps on the teacher's schedule (then the learned-variance values).
  ``timestep`` holds integer timesteps in [0, spec.num_train_timesteps), (B,) or a scalar.
  ``class_labels`` are in [0, num_classes]; index num_classes is the null label (None means null).
- A pair that cannot work raises ``IncompatibleError`` before any weights are allocated.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from collections.abc import Mapping
from typing import Any

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import Tensor, nn

from dkdm_zoo.errors import IncompatibleError, UserError
from dkdm_zoo.registry.hookspecs import DEFAULT_STUDENT_PRESET
from dkdm_zoo.registry.options import Option
from dkdm_zoo.spec import TeacherSpec

# -- presets ------------------------------------------------------------------------------------------


def resolve_preset(
    arch: str, presets: Mapping[str, Any], preset: str, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """The preset's fields with ``overrides`` checked, converted and applied; an unknown preset or
    field, or a value of the wrong type, is a one-line ``UserError``.

    Presets are dataclass instances (their annotated fields are the types, ``Annotated`` ranges
    included) or dicts (each field's type is read off its values across presets: ints, floats,
    strings, bools, tuples of them, None); either way the types are declared once, by the presets.
    """
    if preset not in presets:
        raise UserError(f"student '{arch}' has no preset '{preset}': choose one of {', '.join(presets)}")
    config = preset_values(presets[preset])
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise UserError(
            f"student '{arch}' has no option {', '.join(repr(u) for u in unknown)}; "
            f"options: preset, {', '.join(sorted(config))}"
        )
    types = preset_types(presets)
    for key, value in overrides.items():
        option = Option(key, types.get(key, Any), config[key])
        value = option.check(value, f"student '{arch}': student.{key}")
        config[key] = tuple(value) if isinstance(value, list) else value  # TOML/JSON give lists
    return config


def preset_types(presets: Mapping[str, Any]) -> dict[str, Any]:
    """Each preset field's type: a dataclass's annotations, or inferred from the values of every preset."""
    first = next(iter(presets.values()), None)
    if dataclasses.is_dataclass(first):
        return typing.get_type_hints(type(first), include_extras=True)
    values: dict[str, list[Any]] = {}
    for fields in presets.values():
        for key, value in preset_values(fields).items():
            values.setdefault(key, []).append(value)
    return {key: _inferred_type(seen) for key, seen in values.items()}


def preset_values(preset: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(preset):
        return {f.name: getattr(preset, f.name) for f in dataclasses.fields(preset)}
    return dict(preset)


def _inferred_type(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    numbers = [v for v in present if isinstance(v, int | float) and not isinstance(v, bool)]
    if not present:
        inferred: Any = Any
    elif all(isinstance(v, bool) for v in present):
        inferred = bool
    elif len(numbers) == len(present):
        inferred = int if all(isinstance(v, int) for v in numbers) else float
    elif all(isinstance(v, str) for v in present):
        inferred = str
    elif all(isinstance(v, tuple | list) for v in present):
        items = [item for v in present for item in v]
        inferred = tuple[_inferred_type(items) if items else Any, ...]
    else:
        inferred = Any
    return inferred | None if inferred is not Any and len(present) < len(values) else inferred


# -- compatibility checks (cheap: run before any weights exist) ---------------------------------------


def check_square(spec: TeacherSpec, arch: str) -> int:
    """The resolution of square samples; IncompatibleError for H != W."""
    _, height, width = spec.sample_shape
    if height != width:
        raise IncompatibleError(f"student '{arch}' needs square samples, the teacher's are {height}x{width}")
    return height


def check_conditioning(spec: TeacherSpec, arch: str, *, text: bool) -> None:
    """IncompatibleError for a text-conditional teacher when the student has no text input (``text=False``)."""
    if spec.conditioning == "text" and not text:
        teacher = f"teacher '{spec.family}'" if spec.family else "the teacher"
        raise IncompatibleError(
            f"student '{arch}' has no text conditioning but {teacher} is text-conditional: use a student "
            "with cross-attention ('unet', 'dit')"
        )


def check_patch(spec: TeacherSpec, arch: str, patch_size: int) -> int:
    """Number of patches per side; the resolution must be a multiple of the patch size."""
    resolution = check_square(spec, arch)
    if patch_size < 1 or resolution % patch_size:
        raise IncompatibleError(
            f"student '{arch}': {resolution}x{resolution} samples are not divisible into {patch_size}x{patch_size} "
            "patches: choose patch_size dividing the resolution"
        )
    return resolution // patch_size


def fit_patch(arch: str, spec: TeacherSpec, patch_size: int, min_grid: int, *, explicit: bool) -> int:
    """The patch size of a patch-based student: a preset's patch size shrinks for small samples.

    A preset's ``patch_size`` is halved (while it still divides the resolution exactly) until the
    token grid has at least ``min_grid`` patches per side or the patch is 1: 2x2 patches leave an 8x8
    digit 16 tokens, 1x1 patches 64. A patch size the user chose explicitly is kept as it is
    (it only has to divide the resolution).
    """
    resolution = check_square(spec, arch)
    if not explicit:
        while patch_size > 1 and resolution // patch_size < min_grid and patch_size % 2 == 0:
            patch_size //= 2
    check_patch(spec, arch, patch_size)
    return patch_size


def fit_levels(
    arch: str, resolution: int, widths: tuple[int, ...], min_resolution: int, *, explicit: bool
) -> tuple[int, ...]:
    """Per-level widths for a U-shaped network with one 2x downsampling between levels.

    A preset's widths are cut to the levels the resolution allows (the smallest feature map stays
    >= min_resolution and every downsampling is exact), so one preset fits 8x8 digits and 32x32
    CIFAR. Widths the user chose explicitly are never cut: they fit or raise IncompatibleError.
    """
    levels, size = 1, resolution
    while levels < len(widths) and size % 2 == 0 and size // 2 >= min_resolution:
        levels, size = levels + 1, size // 2
    if levels < len(widths) and explicit:
        raise IncompatibleError(
            f"student '{arch}': {resolution}x{resolution} samples cannot go through {len(widths)} levels "
            f"({len(widths) - 1} exact 2x downsamplings to a map of at least {min_resolution}x{min_resolution}): "
            f"use at most {levels} levels or lower min_resolution"
        )
    return tuple(widths[:levels])


def check_groups(arch: str, widths: tuple[int, ...], groups: int) -> None:
    """UserError unless the GroupNorm group count divides every width."""
    if any(w % groups for w in widths):
        raise UserError(f"student '{arch}': norm_num_groups={groups} must divide every width in {widths}")


def check_heads(arch: str, dim: int, heads: int) -> None:
    """UserError unless the attention head count divides the width."""
    if heads < 1 or dim % heads:
        raise UserError(f"student '{arch}': num_heads={heads} must divide the width {dim}")


# -- forward-time helpers ------------------------------------------------------------------------------


def broadcast_timesteps(timestep: Tensor | int, batch: int, device: torch.device) -> Tensor:
    """(B,) long timesteps from a (B,) tensor, a 0-dim tensor or a python int."""
    t = torch.as_tensor(timestep, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"timestep must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
    return t


def condition_kwargs(
    class_labels: Tensor | None = None, encoder_hidden_states: Tensor | None = None
) -> dict[str, Tensor]:
    """The student contract's condition keywords that are set (a wrapper passes on only these)."""
    kwargs: dict[str, Tensor] = {}
    if class_labels is not None:
        kwargs["class_labels"] = class_labels
    if encoder_hidden_states is not None:
        kwargs["encoder_hidden_states"] = encoder_hidden_states
    return kwargs


def takes_condition_extras(model: Any) -> bool:
    """Whether a student takes a teacher family's condition extras (pooled projections, time ids) as
    keywords beside the contract's: the teacher's own network does, a built-in or plugin student not."""
    return bool(getattr(model, "takes_condition_extras", False))


def split_output(out: Tensor, channels: int) -> tuple[Tensor, Tensor | None]:
    """A student's output as eps and the learned-variance values (None when it has only eps)."""
    return out[:, :channels], (out[:, channels : 2 * channels] if out.shape[1] > channels else None)


def labels_or_null(class_labels: Tensor | None, num_classes: int, batch: int, device: torch.device) -> Tensor:
    """Class labels, or the null label (index num_classes) for all samples when none are given."""
    if class_labels is None:
        return torch.full((batch,), num_classes, dtype=torch.long, device=device)
    return class_labels.to(device=device, dtype=torch.long)


class ConditionEmbedding(nn.Module):
    """One vector per sample: timestep embedding (+ class embedding, + pooled text projection).

    Timesteps use diffusers' sinusoidal ``Timesteps`` + MLP ``TimestepEmbedding`` on the teacher's
    integer scale; the class table has num_classes + 1 rows, the last being the null label.
    """

    def __init__(
        self, dim: int, num_classes: int | None = None, text_dim: int | None = None, freq_dim: int = 256
    ):
        super().__init__()
        self.num_classes = num_classes
        self.time_proj = Timesteps(freq_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(freq_dim, dim)
        self.class_embed = nn.Embedding(num_classes + 1, dim) if num_classes else None
        self.text_pool = nn.Linear(text_dim, dim) if text_dim else None

    def forward(self, t: Tensor, class_labels: Tensor | None = None, context: Tensor | None = None) -> Tensor:
        dtype = self.time_embed.linear_1.weight.dtype
        emb = self.time_embed(self.time_proj(t).to(dtype))
        if self.class_embed is not None:
            emb = emb + self.class_embed(labels_or_null(class_labels, self.num_classes, len(t), t.device))
        if self.text_pool is not None:
            if context is None:
                raise ValueError("this student is text-conditional: pass encoder_hidden_states (B, L, D)")
            emb = emb + self.text_pool(context.mean(dim=1))
        return emb


# -- description ----------------------------------------------------------------------------------------


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those with requires_grad when ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def example_inputs(
    spec: TeacherSpec, batch: int = 1, device: torch.device | str = "cpu"
) -> dict[str, Tensor]:
    """Keyword inputs of the student contract for a random batch fitting the spec."""
    inputs: dict[str, Tensor] = {
        "sample": torch.randn(batch, *spec.sample_shape, device=device),
        "timestep": torch.randint(0, spec.num_train_timesteps, (batch,), device=device),
    }
    if spec.conditioning == "class":
        inputs["class_labels"] = torch.randint(0, spec.num_classes + 1, (batch,), device=device)
    elif spec.conditioning == "text":
        inputs["encoder_hidden_states"] = torch.randn(
            batch, spec.text_seq_len or 77, spec.text_embed_dim, device=device
        )
    return inputs


def describe_student(
    spec: TeacherSpec,
    name: str,
    preset: str | None = DEFAULT_STUDENT_PRESET,
    *,
    registry: Any,
    teacher: Any = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Parameter count, config and input/output shapes of a student built for ``spec`` by ``registry``
    (a student made from the teacher, ``--student teacher``, from ``teacher`` itself; ``preset`` None:
    the student's own default).

    Builds the student on CPU and runs one batch-1 forward, so the reported output shape is measured.
    """
    entry = registry.get("students", name)
    factory = entry.load()
    if teacher is not None and "teacher" in inspect.signature(factory).parameters:
        options = {**overrides, **({"preset": preset} if preset is not None else {})}
        model = factory(spec, teacher=teacher, **entry.check_options(options, require=True))
    else:
        model = registry.create("students", name, spec, preset=preset or DEFAULT_STUDENT_PRESET, **overrides)
    inputs = example_inputs(spec)
    with torch.no_grad():
        out = model.eval()(**inputs)
    shapes = {key: ["B", *value.shape[1:]] for key, value in inputs.items()}
    config = {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in dict(model.config).items()
        if not k.startswith("_")
    }
    return {
        "student": name,
        "preset": preset
        or (getattr(model.config, "source", None) or {}).get("preset", DEFAULT_STUDENT_PRESET),
        "overrides": dict(overrides),
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "parameters": count_parameters(model),
        "parameters_human": human_count(count_parameters(model)),
        "inputs": shapes,
        "output": ["B", *out.shape[1:]],
        "config": config,
    }


def human_count(n: int) -> str:
    if n < 1000:
        return str(n)
    exp = min(int(math.log10(n) // 3), 3)
    return f"{n / 1000**exp:.3g}{' kMG'[exp]}"


def plain_copy(model: nn.Module, cls: type) -> Any:
    """The stock diffusers class ``cls`` with ``model``'s config and weights, on its device and dtype
    (a subclass's forward is not saved). Cast only when the dtype differs: diffusers' ModelMixin.to
    warns about float32 modules on every dtype argument, also a no-op one."""
    plain = cls.from_config(model.config)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain = plain.to(model.device)
    return plain if plain.dtype == model.dtype else plain.to(dtype=model.dtype)
