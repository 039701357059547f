"""`distill --dry-run --json`: the plan as one JSON object on stdout, the same numbers the text plan prints."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.registry import build_registry

ARGS = ["distill", "--recipe", "quickstart", "--dry-run", "--steps", "40", "--batch-size", "16"]


def test_the_dry_run_plan_as_json_agrees_with_the_text_plan():
    app = create_app(build_registry(entry_points=False))
    result = CliRunner().invoke(app, [*ARGS, "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["sharding"] == "ddp" and plan["batch_size_per_process"] == 16 and plan["steps"] == 40
    assert plan["teacher_forwards"] == plan["teacher_forwards_init"] + plan["teacher_forwards_training"]
    assert plan["teacher_forwards_training"] == 40 * 16  # DKDM: one teacher forward per training sample
    parts = plan["memory_bytes"]
    assert plan["memory_per_process_bytes"] == sum(v for v in parts.values() if v is not None)
    assert plan["flops"] > 0 and plan["parameters"]["student"] > 0
    text = CliRunner().invoke(app, ARGS).output
    assert f"{plan['teacher_forwards']:,} (samples" in text  # the text plan's total
    assert f"{plan['flops'] / 1e12:,.3f} TFLOP per step" in text


def test_json_without_dry_run_is_a_one_line_error():
    result = CliRunner().invoke(
        create_app(build_registry(entry_points=False)), ["distill", "--recipe", "quickstart", "--json"]
    )
    assert result.exit_code == 2 and "--json prints the --dry-run plan" in result.output


def plan_json(*extra: str) -> dict:
    app = create_app(build_registry(entry_points=False))
    args = ["distill", "--recipe", "digits-ddpm-sid", "--dry-run", "--json", "--steps", "10", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_plan_per_process_falls_with_processes_under_fsdp_and_not_under_ddp():
    one, four = plan_json("--processes", "1"), plan_json("--processes", "4", "--set", "train.sharding=fsdp")
    assert one["sharding"] == "ddp" and four["sharding"] == "fsdp" and four["processes"] == 4
    # the recipe's own sharding is the headline figure, the parts add up to it
    assert four["memory_per_process_bytes"] == four["memory_per_process"]["fsdp"]["total"]
    assert four["memory_per_process_bytes"] == sum(four["memory_bytes"].values())
    ddp, fsdp = four["memory_per_process"]["ddp"], four["memory_per_process"]["fsdp"]
    for name in ("teacher", "student", "fake_score"):
        assert ddp["networks"][name]["weights"] == 4 * fsdp["networks"][name]["weights"]  # fp32, 1/4 each
    student = fsdp["networks"]["student"]
    assert student["optimizer"] == 2 * student["weights"] and student["ema"] == student["weights"]
    assert ddp["networks"]["student"]["ddp_buckets"] == ddp["networks"]["student"]["gradients"]
    assert fsdp["fsdp_gathered"] > 0 and ddp["fsdp_gathered"] == 0
    # activations and the method's state do not shard: the saving is the networks' state
    assert fsdp["networks"]["student"]["activations"] == ddp["networks"]["student"]["activations"] > 0
    assert fsdp["total"] < ddp["total"]
    # one process: nothing to shard, and ddp has no buckets to reduce through
    single = one["memory_per_process"]
    assert single["ddp"]["total"] == single["fsdp"]["total"] == one["memory_per_process_bytes"]
    assert ddp["total"] - single["ddp"]["total"] == sum(n["ddp_buckets"] for n in ddp["networks"].values())
    assert four["verdict"] == "fits 4 x 80 GB (H100) with ddp and fsdp"
    assert four["estimate"]["cpu_training_s"] > four["estimate"]["training_s"] > 0


def test_the_verdict_names_the_sharding_that_fits():
    """At batch 65536 the activations alone outgrow an L4: no sharding helps, and the line says what does."""
    plan = plan_json("--processes", "8", "--gpu", "L4", "--batch-size", "65536")
    assert plan["verdict"].startswith("does not fit 8 x 24 GB (L4) with ddp or fsdp: fsdp needs")
    assert plan["accelerator_memory_bytes"] == 24e9


def test_the_verdict_line():
    from dkdm_zoo.engine.memory import NetworkMemory, ProcessMemory, verdict

    def process(sharding: str, gb: float) -> ProcessMemory:
        return ProcessMemory(sharding, 8, [NetworkMemory("student", 1, gb * 1e9)], {})

    plans = {"ddp": process("ddp", 100), "fsdp": process("fsdp", 30)}
    assert verdict(plans, 8, "H100", 80e9) == "fits 8 x 80 GB (H100) with fsdp, not with ddp"
    plans["ddp"] = process("ddp", 72.5)  # over the 90% kept usable (72 GB)
    assert verdict(plans, 8, "H100", 80e9) == "fits 8 x 80 GB (H100) with fsdp, not with ddp"
    plans["ddp"] = process("ddp", 71.9)
    assert verdict(plans, 8, "H100", 80e9) == "fits 8 x 80 GB (H100) with ddp and fsdp"


def test_the_verdict_suggests_only_what_the_run_does_not_do_yet():
    from dkdm_zoo.config.recipes import TrainConfig
    from dkdm_zoo.engine.memory import NetworkMemory, ProcessMemory, unused_levers, verdict

    def plans(refused: str = "") -> dict[str, ProcessMemory]:  # refused: a LoRA on the teacher's tensors
        big = NetworkMemory("student", 1, 100e9, activations=50e9, shared=1 if refused else 0)
        return {
            "ddp": ProcessMemory("ddp", 2, [big], {}),
            "fsdp": ProcessMemory("fsdp", 2, [big], {}, refused=refused),
        }

    plain = TrainConfig(batch_size=8)  # fp32, no checkpointing, ddp
    assert unused_levers(plain, plans(), 2) == [
        "train.mixed_precision='bf16'",
        "train.teacher_dtype='bfloat16'",
        "train.activation_checkpointing=true",
        "more processes with fsdp",
        "train.cpu_offload=true (fsdp)",
        "a smaller train.batch_size (train.grad_accum keeps the batch per step)",
    ]
    half = TrainConfig(batch_size=8, mixed_precision="bf16", teacher_dtype="bfloat16")
    assert unused_levers(half, plans(), 2)[0] == "train.activation_checkpointing=true"
    sharded = TrainConfig(batch_size=8, sharding="fsdp", cpu_offload=True, activation_checkpointing=True)
    assert "more processes" in unused_levers(sharded, plans(), 2)
    assert "train.cpu_offload=true (fsdp)" not in unused_levers(sharded, plans(), 2)
    lora_one = plans()  # one process: fsdp is not refused yet, but would be over more processes
    lora_one["ddp"].networks[0].shared = 1
    assert not any("fsdp" in lever for lever in unused_levers(plain, lora_one, 1))
    # a bf16, checkpointed LoRA run at batch 1 (fsdp refused): no lever left
    lora = TrainConfig(
        batch_size=1, mixed_precision="bf16", teacher_dtype="bfloat16", activation_checkpointing=True
    )
    levers = unused_levers(lora, plans("LoRA on the teacher's own tensors"), 2)
    assert levers == []
    line = verdict(plans("LoRA on the teacher's own tensors"), 2, "H100", 80e9, levers)
    assert line.startswith("does not fit 2 x 80 GB (H100) with ddp (fsdp refused: LoRA on the teacher's own")
    assert line.endswith("the run already uses every lever the plan knows: a larger accelerator (--gpu)")
    assert "bf16" not in line and "fsdp'" not in line


def test_a_bf16_run_is_not_told_to_use_bf16():
    args = ("--processes", "8", "--gpu", "L4", "--batch-size", "65536")
    half = ("--set", "train.mixed_precision=bf16", "--set", "train.teacher_dtype=bfloat16")
    fp32 = plan_json(*args)["verdict"]
    assert "train.mixed_precision='bf16'" in fp32 and "train.activation_checkpointing=true" in fp32
    line = plan_json(*args, *half, "--set", "train.activation_checkpointing=true")["verdict"]
    assert line.startswith("does not fit 8 x 24 GB (L4) with ddp or fsdp")
    assert "bf16" not in line and "bfloat16" not in line and "activation_checkpointing" not in line
    assert "more processes with fsdp" in line and "a smaller train.batch_size" in line
