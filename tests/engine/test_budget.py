"""The dry-run's activation memory: what one more sample costs, and what a forward costs once."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DModel

from dkdm_zoo.engine.budget import _block_checkpointing, _measure


def mlp() -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32))


def test_activations_per_sample_are_the_saved_inputs_and_fp32_weights_cost_nothing_more():
    net = mlp()
    cost = _measure(lambda b: net(torch.randn(b, 64, requires_grad=True)), list(net.parameters()), True)
    # saved per sample: the first layer's input (64) and the ReLU output, which the second layer
    # saves as its input too (128), fp32; the weights saved are the parameters themselves
    assert cost.activation_bytes == (64 + 128) * 4
    assert cost.activation_fixed_bytes == 0
    assert cost.activations(8) == 8 * (64 + 128) * 4
    assert cost.forward_flops == 2 * (64 * 128 + 128 * 32)  # batch 1


def test_under_bf16_the_weight_casts_are_counted_once_whatever_the_batch():
    net = mlp()
    cost = _measure(
        lambda b: net(torch.randn(b, 64, requires_grad=True)), list(net.parameters()), True, "bf16"
    )
    assert cost.activation_bytes == (64 + 128) * 2
    assert cost.activation_fixed_bytes == (64 * 128 + 128 * 32) * 2  # bf16 copies of both weights
    assert cost.activations(100) == 100 * (64 + 128) * 2 + (64 * 128 + 128 * 32) * 2


def test_activation_checkpointing_is_measured_and_then_switched_back_off():
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )  # fmt: skip

    def forward(batch: int) -> torch.Tensor:
        x = torch.randn(batch, 1, 8, 8, requires_grad=True)
        return unet(x, torch.full((batch,), 10)).sample

    params = list(unet.parameters())
    plain = _measure(forward, params, True)
    with _block_checkpointing([unet], enabled=True):
        assert unet.is_gradient_checkpointing
        checkpointed = _measure(forward, params, True)
    assert not unet.is_gradient_checkpointing
    assert 0 < checkpointed.activation_bytes < plain.activation_bytes / 2
    assert checkpointed.forward_flops == plain.forward_flops
    with _block_checkpointing([unet], enabled=False):
        assert not unet.is_gradient_checkpointing


def built_run(*overrides: str, teacher: str | None = None, recipe: str = "digits-ddpm-sid"):
    """The objects `distill --recipe RECIPE --student teacher --set ...` builds (as --dry-run does)."""
    from dkdm_zoo.config import build as builder
    from dkdm_zoo.config import resolve as resolver
    from dkdm_zoo.registry import build_registry

    registry = build_registry(entry_points=False)
    flags = {"teacher": teacher} if teacher is not None else {}
    resolved = resolver.resolve(
        registry, recipe=recipe, student="teacher", steps=2, overrides=list(overrides), **flags
    )
    return builder.build(resolved, registry)


def state_bytes(memory) -> float:
    """A process's memory less activations: weights, gradients, AdamW moments, EMA, state."""
    return memory.total - sum(n.activations for n in memory.networks)


def closed_form(built) -> dict[str, tuple[int, int]]:
    """Per trained network, from its module: (trainable parameters, frozen ones that are the teacher's)."""
    teacher_ids = {id(p) for m in built.teacher.modules() for p in m.parameters()}
    return {
        name: (
            sum(p.numel() for p in n.module.parameters() if p.requires_grad),
            sum(p.numel() for p in n.module.parameters() if not p.requires_grad and id(p) in teacher_ids),
        )
        for name, n in built.method.networks().items()
    }


def test_lora_networks_on_the_teachers_base_count_it_once_in_the_teachers_row():
    """SiD with a LoRA generator and a LoRA fake score: both run on the teacher's own frozen tensors,
    which the teacher's row counts once at its dtype; each LoRA row holds its adapters and their
    gradients, AdamW moments and (the student's) EMA, nothing of the base."""
    pytest.importorskip("peft")
    from dkdm_zoo.engine.budget import plan
    from dkdm_zoo.engine.memory import per_process

    lora, full = built_run("student.lora_rank=4"), built_run()
    base = sum(p.numel() for p in full.teacher.denoiser().parameters())
    counts = closed_form(lora)
    assert set(counts) == {"student", "fake_score"}
    lora_memory = per_process(lora, plan(lora), "ddp", 1)
    full_memory = per_process(full, plan(full), "ddp", 1)
    # a full copy trains every base parameter in both networks: fp32 weights, gradients, two AdamW
    # moments (+ the student's EMA), none of which the LoRA run holds
    a_student, a_fake = counts["student"][0], counts["fake_score"][0]
    saved = 20 * (base - a_student) + 16 * (base - a_fake)
    assert state_bytes(full_memory) - state_bytes(lora_memory) == saved
    assert saved >= 2 * 4 * base  # at least the fp32 base once per network that shares it
    rows = {n.name: n for n in lora_memory.networks}
    assert rows["teacher"].weights == full_memory.networks[0].weights  # the same teacher, once
    for name, (trainable, shared) in counts.items():
        assert shared == base and 0 < trainable < base / 10
        row = rows[name]
        assert (row.params, row.shared) == (trainable, shared)
        assert row.weights == row.gradients == 4 * trainable and row.optimizer == 8 * trainable
        assert row.ema == (4 * trainable if name == "student" else 0)
    # the headline plan (engine.budget) agrees with the rows
    for built, memory in ((lora, lora_memory), (full, full_memory)):
        budget = plan(built, measure=False)
        assert state_bytes(memory) == budget.weight_bytes + sum(budget.state_bytes.values())


def test_an_sdxl_lora_sid_plan_counts_the_bf16_unet_once(tmp_path):
    """The narrow SDXL layout with the shipped recipe's LoRA (bf16 teacher): the plan's weights are
    the teacher's bf16 tensors once plus fp32 adapters with their training state."""
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from dkdm_zoo.engine.budget import plan
    from dkdm_zoo.engine.memory import per_process
    from dkdm_zoo.testing.sdxl_fixtures import build_sdxl

    folder = build_sdxl(tmp_path / "sdxl")
    built = built_run(teacher=f"sdxl@{folder}", recipe="sdxl-to-one-step-sid")
    assert built.recipe.train.teacher_dtype == "bfloat16"
    teacher_params = sum(p.numel() for m in built.teacher.modules() for p in m.parameters())
    unet = sum(p.numel() for p in built.teacher.denoiser().parameters())
    counts = closed_form(built)
    assert all(shared == unet for _, shared in counts.values())
    memory = per_process(built, plan(built, measure=False), "ddp", 1)
    trained = 20 * counts["student"][0] + 16 * counts["fake_score"][0]
    assert memory.networks[0].weights == 2 * teacher_params  # the teacher at teacher_dtype, bf16
    assert memory.total == 2 * teacher_params + trained + sum(memory.state.values())


def test_activations_are_measured_in_the_dtype_training_casts_the_teacher_to():
    """A teacher loaded in fp32 with train.teacher_dtype=bfloat16 trains in bf16: the plan measures it so
    (the teacher and the LoRA networks on its tensors save bf16 activations, half the fp32 bytes)."""
    pytest.importorskip("peft")
    from dkdm_zoo.engine.budget import plan

    fp32 = built_run("student.lora_rank=4")
    half = built_run("student.lora_rank=4", "train.teacher_dtype=bfloat16")
    assert all(p.dtype == torch.float32 for m in half.teacher.modules() for p in m.parameters())
    fp32_plan, half_plan = plan(fp32), plan(half)
    assert all(p.dtype == torch.bfloat16 for m in half.teacher.modules() for p in m.parameters())
    for name in ("teacher", "fake_score"):
        ratio = half_plan.network_activations[name] / fp32_plan.network_activations[name]
        assert 0.45 < ratio < 0.55
