"""Pruned copies of a teacher's network: blocks removed, every kept tensor copied from the teacher.

UNets (diffusers ``UNet2DModel`` / ``UNet2DConditionModel``), the BK-SDM recipe (Kim et al. 2023,
Nota-NetsPresso/BK-SDM ``copy_weight_from_teacher``):

- ``bk-base``: one resnet (+ attention) fewer in every down and up stage (``layers_per_block`` - 1).
  A down stage keeps its first pairs; an up stage keeps its first pairs and its LAST one (the
  last up layer reads the skip of the previous stage, so its shapes only fit the teacher's last);
  SD's 2/3 layers become 1/2: student up.resnets.1 <- teacher up.resnets.2.
- ``bk-small``: ``bk-base`` without the mid-block.
- ``bk-tiny``: ``bk-small`` without the innermost stage (the last down and first up stage);
  student up stage i <- teacher up stage i + 1, and the new last down stage drops its downsampler.

Transformers (any diffusers transformer with ``num_layers`` + ``transformer_blocks``, and FLUX's
``num_single_layers`` + ``single_transformer_blocks``): depth pruning. ``half`` keeps every second
block (0, 2, 4, ...); ``keep_blocks`` lists the kept indices; kept block k of the student is the
teacher's ``keep_blocks[k]``.

``prune(network, preset, keep_blocks)`` returns the student's config and the teacher-key of every
student tensor; ``copy_weights`` copies what fits and reports how many tensors it copied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from dkdm_zoo.errors import IncompatibleError, UserError

UNET_PRESETS = ("bk-base", "bk-small", "bk-tiny")
TRANSFORMER_PRESETS = ("half",)
#: (config key of the depth, the ModuleList it counts) in diffusers transformers
DEPTH_LISTS = (("num_layers", "transformer_blocks"), ("num_single_layers", "single_transformer_blocks"))

KeyMap = Callable[[str], str]


def _is_unet(config: dict[str, Any]) -> bool:
    return "down_block_types" in config and "up_block_types" in config and "layers_per_block" in config


def prune(
    network: nn.Module, preset: str, keep_blocks: Sequence[int] | None = None
) -> tuple[dict[str, Any], KeyMap, dict[str, Any]]:
    """(the pruned network's config, student key -> teacher key, a record of what was removed)."""
    config = {k: v for k, v in dict(network.config).items() if not k.startswith("_")}
    name = type(network).__name__
    if preset in UNET_PRESETS:
        if not _is_unet(config):
            raise IncompatibleError(
                f"student 'teacher' preset {preset!r} removes UNet blocks, but the teacher's {name} is not a "
                "UNet: use preset 'half' or student.keep_blocks for transformers"
            )
        return _prune_unet(config, preset, name)
    if preset in TRANSFORMER_PRESETS or keep_blocks is not None:
        return _prune_depth(network, config, preset, keep_blocks, name)
    raise UserError(f"student 'teacher': no pruning preset {preset!r}")


def _prune_unet(
    config: dict[str, Any], preset: str, name: str
) -> tuple[dict[str, Any], KeyMap, dict[str, Any]]:
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise IncompatibleError(
            f"student 'teacher' preset {preset!r}: the teacher's {name} has per-stage layers_per_block {layers}; "
            "BK presets need one count for every stage"
        )
    if layers < 2:
        raise IncompatibleError(
            f"student 'teacher' preset {preset!r}: the teacher's {name} has layers_per_block {layers}; "
            "removing a resnet from every stage needs at least 2"
        )
    student = dict(config, layers_per_block=layers - 1)
    removed: dict[str, Any] = {"layers_per_block": [layers, layers - 1]}
    if preset in ("bk-small", "bk-tiny"):
        student["mid_block_type"] = None
        removed["mid_block"] = True
    drop_stage = preset == "bk-tiny"
    if drop_stage:
        stages = len(config["block_out_channels"])
        if stages < 2:
            raise IncompatibleError(
                f"student 'teacher' preset 'bk-tiny': the teacher's {name} has one stage only"
            )
        for key in ("block_out_channels", "down_block_types"):
            student[key] = list(config[key])[:-1]
        student["up_block_types"] = list(config["up_block_types"])[1:]
        for key in (
            "attention_head_dim",
            "num_attention_heads",
            "transformer_layers_per_block",
            "only_cross_attention",
        ):
            value = config.get(key)
            if isinstance(value, list | tuple) and len(value) == stages:
                student[key] = list(value)[:-1]
        removed["innermost_stage"] = stages - 1
    teacher_last, student_last = layers, layers - 1  # up stages hold layers_per_block + 1 layers

    def teacher_key(key: str) -> str:
        parts = key.split(".")
        if parts[0] == "up_blocks":
            parts[1] = str(int(parts[1]) + (1 if drop_stage else 0))
            if len(parts) > 3 and parts[2] in ("resnets", "attentions") and int(parts[3]) == student_last:
                parts[3] = str(teacher_last)
        return ".".join(parts)

    return student, teacher_key, removed


def _prune_depth(
    network: nn.Module, config: dict[str, Any], preset: str, keep_blocks: Sequence[int] | None, name: str
) -> tuple[dict[str, Any], KeyMap, dict[str, Any]]:
    lists = [
        (key, attr)
        for key, attr in DEPTH_LISTS
        if key in config and isinstance(getattr(network, attr, None), nn.ModuleList)
    ]
    if not lists:
        raise IncompatibleError(
            f"student 'teacher': depth pruning needs a transformer with num_layers and transformer_blocks; "
            f"the teacher's {name} has none: use a BK preset for UNets"
        )
    if config.get("dual_attention_layers"):
        raise IncompatibleError(
            f"student 'teacher': the teacher's {name} sets dual_attention_layers; depth pruning does not "
            "remap them yet: use the full network or LoRA"
        )
    student = dict(config)
    kept: dict[str, list[int]] = {}
    for index, (key, attr) in enumerate(lists):
        depth = int(config[key])
        if keep_blocks is not None and index == 0:
            indices = sorted({int(i) for i in keep_blocks})
            bad = [i for i in indices if not 0 <= i < depth]
            if bad or not indices:
                raise UserError(
                    f"student.keep_blocks {list(keep_blocks)}: the teacher's {name} has {depth} blocks "
                    f"({attr} 0..{depth - 1}); list at least one index in that range"
                )
        else:
            indices = list(range(0, depth, 2))  # 'half': every second block, the first kept
        kept[attr] = indices
        student[key] = len(indices)

    def teacher_key(key: str) -> str:
        parts = key.split(".")
        if parts[0] in kept and len(parts) > 1:
            parts[1] = str(kept[parts[0]][int(parts[1])])
        return ".".join(parts)

    return student, teacher_key, {"kept_blocks": kept}


def copy_weights(
    student: nn.Module, teacher: nn.Module, teacher_key: KeyMap, load: bool = True
) -> tuple[int, int, list[str]]:
    """Copy every student tensor whose mapped teacher tensor exists with its shape; returns (copied,
    total, the student keys left at their initialisation). ``load=False``: only count (an empty
    student, ``students.materialise``, whose weights come from the main process)."""
    source = teacher.state_dict()
    target = student.state_dict()
    copied, missed = {}, []
    for key, value in target.items():
        match = source.get(teacher_key(key))
        if match is not None and match.shape == value.shape:
            copied[key] = match.to(value.dtype) if load else match  # counting: no converted copy
        else:
            missed.append(key)
    if load:
        student.load_state_dict(copied, strict=False)
    return len(copied), len(target), missed


def feature_pairs(network: nn.Module, source: dict[str, Any]) -> list[tuple[str, str]]:
    """(teacher module, student module) whose outputs correspond, for feature distillation: every stage
    of a UNet (BK-SDM's ``mapping_layers``: each down and up block, the mid-block where kept; bk-tiny's
    up stage i is the teacher's i + 1 and its last down stage is read at its last attention's
    ``proj_out``), or every kept transformer block. ``source`` is the student's record of its making."""
    preset = source.get("preset", "full")
    pairs: list[tuple[str, str]] = []
    if isinstance(getattr(network, "down_blocks", None), nn.ModuleList):
        downs, ups = len(network.down_blocks), len(network.up_blocks)
        tiny = preset == "bk-tiny"
        for i in range(downs):
            if tiny and i == downs - 1:  # no downsampler here, unlike the teacher's: read inside the stage
                attentions = getattr(network.down_blocks[i], "attentions", None)
                if attentions:
                    last = len(attentions) - 1
                    teacher_last = (source.get("layers_per_block") or [last + 2])[0] - 1
                    pairs.append(
                        (
                            f"down_blocks.{i}.attentions.{teacher_last}.proj_out",
                            f"down_blocks.{i}.attentions.{last}.proj_out",
                        )
                    )
                continue
            pairs.append((f"down_blocks.{i}", f"down_blocks.{i}"))
        if getattr(network, "mid_block", None) is not None:
            pairs.append(("mid_block", "mid_block"))
        pairs += [(f"up_blocks.{i + (1 if tiny else 0)}", f"up_blocks.{i}") for i in range(ups)]
        return pairs
    kept = source.get("kept_blocks") or {}
    for _, attr in DEPTH_LISTS:
        blocks = getattr(network, attr, None)
        if isinstance(blocks, nn.ModuleList):
            indices = kept.get(attr, list(range(len(blocks))))
            pairs += [(f"{attr}.{t}", f"{attr}.{s}") for s, t in enumerate(indices)]
    if not pairs:
        raise IncompatibleError(
            f"feature distillation: no corresponding blocks known for a {type(network).__name__} "
            "(UNet stages or transformer blocks)"
        )
    return pairs
