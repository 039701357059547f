"""The plan's phases beside the training loop (engine.phases): the start (the teacher as loaded, then
cast) and the export (a LoRA merged into a full copy while training's state is resident)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.registry import build_registry
from tests.engine.test_budget import built_run

LORA = ("--student", "teacher", "--set", "student.lora_rank=4")


def dry_run(*extra: str, as_json: bool = True) -> dict | str:
    app = create_app(build_registry(entry_points=False))
    args = ["distill", "--recipe", "digits-ddpm-sid", "--dry-run", "--steps", "10", *extra]
    result = CliRunner().invoke(app, [*args, "--json"] if as_json else args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if as_json else result.output


def own_bytes(built) -> int:
    """The trained networks' own tensors (the LoRA adapters), read from the modules."""
    teacher_ids = {id(p) for m in built.teacher.modules() for p in m.parameters()}
    return sum(
        p.numel() * p.element_size()
        for n in built.method.networks().values()
        for p in n.module.parameters()
        if id(p) not in teacher_ids
    )


def resident(memory: dict) -> float:
    """What training keeps between steps, from the plan's rows: not activations nor gradients."""
    kept = ("weights", "optimizer", "ema", "ddp_buckets")
    return sum(n[k] for n in memory["networks"].values() for k in kept) + sum(memory["state"].values())


def test_a_digits_lora_sid_export_is_merged_and_counts_the_merged_copy_beside_trainings_state():
    pytest.importorskip("peft")
    from dkdm_zoo.export.adapters import lora_pipeline
    from dkdm_zoo.export.folder import pipeline_kind
    from dkdm_zoo.students.teacher_net import lora_network
    from dkdm_zoo.teachers.base import PipelineComponents

    built = built_run("student.lora_rank=4")
    spec = built.teacher.spec
    # a digits one-step LoRA generator exports as DKDMZooPipeline, which loads no LoRA: it is merged
    assert pipeline_kind(built.student, spec, PipelineComponents()) == "DKDMZooPipeline"
    assert lora_pipeline(built.student, spec, PipelineComponents()) is None
    merged = lora_network(built.student).merged()  # what the export builds
    n = sum(p.numel() for p in merged.parameters())
    assert n == sum(p.numel() for p in built.teacher.denoiser().parameters())
    assert all(p.dtype == torch.float32 for p in merged.parameters())  # the base's dtype: fp32 here
    for teacher_dtype, clone in (("float32", 4), ("bfloat16", 2)):
        plan = dry_run(*LORA, "--set", f"train.teacher_dtype={teacher_dtype}")
        phases, memory = plan["memory_phases_bytes"], plan["memory_per_process"]["ddp"]
        # one merged copy of the base, at the dtype training holds it in
        assert phases["export"] == resident(memory) + n * clone
        assert phases["training"] == memory["total"] == memory["phases"]["training"]
        assert plan["memory_per_process_bytes"] == max(phases.values())
    # at batch 1, checkpointed, the merge outgrows the loop: the headline is the export
    small = dry_run(*LORA, "--batch-size", "1", "--set", "train.activation_checkpointing=true")
    phases = small["memory_phases_bytes"]
    assert phases["export"] > phases["training"] and small["memory_per_process_bytes"] == phases["export"]
    assert small["memory_per_process_is"] == "the largest of memory_phases_bytes: export"
    text = dry_run(*LORA, as_json=False)
    assert "export (+ LoRA merged for DKDMZooPipeline)" in text and "start-up (teacher as loaded" in text


def test_a_teacher_loaded_in_fp32_and_trained_in_bf16_starts_at_4_bytes_per_parameter_plus_its_cast():
    pytest.importorskip("peft")
    built = built_run("student.lora_rank=4")
    params = sum(p.numel() for m in built.teacher.modules() for p in m.parameters())
    largest = max(sum(p.numel() for p in m.parameters()) for m in built.teacher.modules())
    own = own_bytes(built)
    assert 0 < own < params  # the adapters only: the base is the teacher's, counted once
    cast = dry_run(*LORA, "--set", "teacher.dtype=float32", "--set", "train.teacher_dtype=bfloat16")
    assert cast["memory_phases_bytes"]["start_up"] == 4 * params + 2 * largest + own
    same = dry_run(*LORA, "--set", "teacher.dtype=float32", "--set", "train.teacher_dtype=float32")
    assert same["memory_phases_bytes"]["start_up"] == 4 * params + own  # nothing to cast
    half = dry_run(*LORA, "--set", "teacher.dtype=bfloat16", "--set", "train.teacher_dtype=bfloat16")
    # loaded in bf16, peft builds the adapters in bf16 too: read from what was built
    half_own = own_bytes(built_run("student.lora_rank=4", "teacher.dtype=bfloat16"))
    assert half["memory_phases_bytes"]["start_up"] == 2 * params + half_own


def test_a_full_student_exported_without_a_plain_copy_adds_nothing_at_the_end():
    """The recipe's own student (a one-step generator, DKDMZooPipeline holds it as it is): the export
    phase is training's resident state alone, below the loop; the headline stays the loop."""
    plan = dry_run("--processes", "2")
    phases, memory = plan["memory_phases_bytes"], plan["memory_per_process"]["ddp"]
    assert phases["export"] == resident(memory) < phases["training"]
    assert plan["memory_per_process_bytes"] == phases["training"] == sum(plan["memory_bytes"].values())
    assert plan["memory_per_process_is"] == "the largest of memory_phases_bytes: training"


def test_the_verdict_judges_the_largest_phase():
    from dkdm_zoo.engine.memory import NetworkMemory, ProcessMemory, verdict
    from dkdm_zoo.engine.phases import Phases

    def process(sharding: str, export_gb: float) -> ProcessMemory:
        memory = ProcessMemory(sharding, 8, [NetworkMemory("student", 1, 30e9)], {})
        memory.phases = Phases(10e9, memory.total, export_gb * 1e9)
        return memory

    plans = {"ddp": process("ddp", 75), "fsdp": process("fsdp", 40)}  # 72 GB usable of 80
    assert verdict(plans, 8, "H100", 80e9) == "fits 8 x 80 GB (H100) with fsdp, not with ddp"
    plans["fsdp"] = process("fsdp", 73)
    assert verdict(plans, 8, "H100", 80e9).startswith(
        "does not fit 8 x 80 GB (H100) with ddp or fsdp: fsdp needs 73.0 GB per process"
    )
    # the export is the largest phase: the verdict says so, and the batch is no lever for it
    levers = [
        "train.activation_checkpointing=true",
        "a smaller train.batch_size",
        "train.cpu_offload=true (fsdp)",
    ]
    plans["fsdp"].phases = Phases(10e9, plans["fsdp"].total, 73e9, "LoRA merged for FluxPipeline")
    assert verdict(plans, 8, "H100", 80e9, levers) == (
        "does not fit 8 x 80 GB (H100) with ddp or fsdp: fsdp needs 73.0 GB per process (of 72.0 GB "
        "usable), at the export (LoRA merged for FluxPipeline); use train.cpu_offload=true (fsdp)"
    )


def test_under_fsdp_the_export_holds_the_student_gathered_whole_beside_the_shards():
    built = built_run()
    whole = sum(p.numel() * p.element_size() for p in built.student.parameters())
    plan = dry_run("--student", "teacher", "--processes", "4", "--set", "train.sharding=fsdp")
    fsdp, ddp = plan["memory_per_process"]["fsdp"], plan["memory_per_process"]["ddp"]
    assert fsdp["phases"]["export"] == resident(fsdp) + whole
    assert ddp["phases"]["export"] == resident(ddp)  # every process holds it already
    # the start is not sharded: every process loads the teacher, process 0 builds the networks whole
    assert fsdp["phases"]["start_up"] == ddp["phases"]["start_up"]
