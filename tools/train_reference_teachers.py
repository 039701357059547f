"""Train the reference digits teachers on real data and ship them in dkdm_zoo/assets/<name>/.

    python tools/train_reference_teachers.py digits-ddpm   # or digits-dit, digits-flow, or all

Each teacher trains with the project's own engine (``dkdm_zoo.engine.train``, method ``data``, the
network-free ``spec`` teacher) from ``recipes/train-<name>.toml``, on CPU, seeded; the EMA network is
then exported in its diffusers family layout, loaded back through the registry (as users load it) and
evaluated with ``dkdm_zoo.evaluation`` (N = 1797 samples, 50-step DDIM); the numbers go into the
folder's MODEL_CARD.md. One torch thread is the fastest setting on a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "dkdm_zoo" / "assets"
TEACHERS = ("digits-ddpm", "digits-dit", "digits-flow")
EULER_STEPS = (10, 50)  # digits-flow: its own Euler sampler at 10 and 50 steps
N_EVAL = 1797  # every real digit: the reference set size
EVAL_STEPS = 50
DIT_SCALES = (1.0, 3.0)


def build_pixel_dit(spec: Any, options: dict[str, Any]) -> Any:
    """The diffusers DiT wrapped in the student contract (see ``PixelDiT``) from the recipe's sizes."""
    from dkdm_zoo.teachers.reference import PixelDiT

    opts = {k: v for k, v in options.items() if k != "preset"}
    if float(opts.pop("mlp_ratio", 4.0)) != 4.0:
        raise SystemExit("diffusers' DiT feed-forward is 4x wide: keep student.mlp_ratio = 4.0")
    channels, size, _ = spec.sample_shape
    return PixelDiT(
        sample_size=size,
        in_channels=channels,
        out_channels=spec.out_channels,
        num_classes=spec.num_classes,
        patch_size=int(opts.pop("patch_size")),
        hidden_size=int(opts.pop("hidden_size")),
        depth=int(opts.pop("depth")),
        num_heads=int(opts.pop("num_heads")),
    )


def scheduler_for(spec: Any) -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=spec.num_train_timesteps,
        **{k: v for k, v in spec.schedule.items() if k in ("beta_schedule", "beta_start", "beta_end")},
        variance_type=spec.variance_type,
        clip_sample=spec.clip_sample,
        clip_sample_range=spec.clip_sample_range,
        prediction_type="epsilon",
    )


def export(name: str, run: Path, student: Any, spec: Any, dest: Path) -> None:
    """The trained (EMA) network in its family layout: a DDPMPipeline, a flat flow-matching folder
    (UNet2DModel + FlowMatchEuler scheduler at the root, as diffusers saves them), or a DiTPipeline
    without a VAE."""
    if dest.exists():
        shutil.rmtree(dest)
    if name == "digits-ddpm":
        from dkdm_zoo.export.run import export_run
        from dkdm_zoo.registry import build_registry
        from dkdm_zoo.runs import Run

        export_run(Run(run), build_registry(entry_points=False), student=student)  # DDPMPipeline
        shutil.copytree(run / "pipeline", dest)
        (dest / "README.md").unlink(missing_ok=True)  # the run's card; MODEL_CARD.md describes the asset
        (dest / "samples.png").unlink(missing_ok=True)
        return
    if name == "digits-flow":
        from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DModel

        from dkdm_zoo.students.base import plain_copy

        plain_copy(student, UNet2DModel).save_pretrained(dest, safe_serialization=True)
        scheduler = {k: v for k, v in spec.schedule.items() if not k.startswith("_")}
        FlowMatchEulerDiscreteScheduler.from_config(scheduler).save_pretrained(dest)
        return
    from diffusers import DiTPipeline

    # A DiTPipeline with vae=None saves model_index.json, transformer/ and scheduler/ only: the `dit`
    # teacher then runs it in pixel space. id2label names the classes for DiTPipeline.get_label_ids.
    pipe = DiTPipeline(transformer=student.transformer, vae=None, scheduler=scheduler_for(spec))
    pipe.save_pretrained(dest, safe_serialization=True)
    index = json.loads((dest / "model_index.json").read_text())
    (dest / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def evaluate_teacher(name: str, out: Path, seed: int = 0) -> dict[str, Any]:
    """FD / precision / recall (and class accuracy) of N_EVAL 50-step DDIM samples vs the real digits."""
    import torch

    from dkdm_zoo.evaluation import evaluate
    from dkdm_zoo.registry import build_registry
    from dkdm_zoo.teachers.base import Condition

    teacher = build_registry(entry_points=False).create("teachers", name)
    results: dict[str, Any] = {}
    grids = {}
    if teacher.spec.conditioning == "class":
        labels = torch.arange(N_EVAL) % teacher.spec.num_classes
        for scale in DIT_SCALES:
            gen = torch.Generator().manual_seed(seed)
            x = teacher.sample(
                N_EVAL, steps=EVAL_STEPS, cond=Condition(labels=labels), guidance_scale=scale, generator=gen
            )
            metrics = evaluate(x, "data", labels=labels)
            metrics.pop("per_class_accuracy", None)
            results[f"guidance_{scale:g}"] = metrics
            grids[f"samples-cfg{scale:g}.png"] = x[:100]
    elif teacher.spec.process == "flow":
        for steps in EULER_STEPS:
            gen = torch.Generator().manual_seed(seed)
            x = teacher.sample(N_EVAL, steps=steps, generator=gen)
            results[f"euler_{steps}"] = evaluate(x, "data")
            grids[f"samples-euler{steps}.png"] = x[:100]
    else:
        gen = torch.Generator().manual_seed(seed)
        x = teacher.sample(N_EVAL, steps=EVAL_STEPS, generator=gen)
        results["unconditional"] = evaluate(x, "data")
        grids["samples.png"] = x[:100]
    from torchvision.utils import save_image

    for filename, images in grids.items():
        save_image(((images + 1) / 2).clamp(0, 1), out / filename, nrow=10)
    return results


def model_card(name: str, recipe: Any, student: Any, info: dict[str, Any]) -> str:
    params = sum(p.numel() for p in student.parameters())
    arch = {
        "digits-ddpm": "diffusers `UNet2DModel`, unconditional, eps prediction; DDPMPipeline layout",
        "digits-flow": "diffusers `UNet2DModel`, unconditional, rectified flow (velocity prediction at timestep "
        "s T); flat layout: config.json, the weights and scheduler_config.json (FlowMatchEulerDiscreteScheduler) at the root",
        "digits-dit": "diffusers `DiTTransformer2DModel` in pixel space, class-conditional (10 classes, "
        "null label 10 for classifier-free guidance), learned variance (out_channels 2, learned_range); "
        "DiTPipeline layout without vae/",
    }[name]
    lines = [
        f"# {name}: reference teacher trained on scikit-learn's 8x8 digits",
        "",
        f"- Architecture: {arch}; {params:,} parameters; config in the model folder's config.json.",
        f"- Student options used: `{json.dumps(recipe.student.options)}`",
        "- Schedule: rectified flow x_s = (1 - s) x0 + s eps, FlowMatchEulerDiscreteScheduler, shift 1.0, T = 1000; "
        "trained on logit-normal noise levels s = sigmoid(N(0, 1)), SD3's draw."
        if name == "digits-flow"
        else "- Schedule: DDPM linear betas 1e-4..0.02, T = 1000, clip_sample true (scheduler/).",
        "- Data: the 1,797 digits of `sklearn.datasets.load_digits` (all of them), pixels scaled to [-1, 1] "
        "(`dkdm_zoo.datasets.load_digits_images`).",
        f"- Training: method `data`, {recipe.train.steps} steps, batch {recipe.train.batch_size}, AdamW lr "
        f"{recipe.train.lr} ({recipe.train.lr_schedule}, {recipe.train.warmup_steps} warm-up), EMA "
        f"{recipe.train.ema_decay} (shipped weights are the EMA), seed {recipe.train.seed}; recipe "
        f"`recipes/train-{name}.toml`.",
        f"- Command: `python tools/train_reference_teachers.py {name}` (CPU, 1 torch thread).",
        f"- Training wall time: {info['train_seconds'] / 60:.1f} min on a shared 2-core CPU "
        f"(load average {info['load_average']:.1f} at the end); torch {info['torch']}, diffusers {info['diffusers']}.",
        "",
        f"## Quality (N = {N_EVAL} samples, "
        + ("its own Euler sampler" if name == "digits-flow" else f"{EVAL_STEPS}-step DDIM")
        + ", `dkdm_zoo.evaluation.evaluate` vs all real digits)",
        "",
        "Feature space of the shipped digit classifier; for scale: real-vs-real halves FD ~1.2, uniform noise ~82.",
        "",
        "| sampling | FD | precision | recall | class accuracy |",
        "|---|---|---|---|---|",
    ]
    for key, m in info["metrics"].items():
        acc = f"{m['accuracy']:.3f}" if "accuracy" in m else "-"
        lines.append(
            f"| {key.replace('_', ' ')} | {m['fd']:.2f} | {m['precision']:.3f} | {m['recall']:.3f} | {acc} |"
        )
    lines += [
        "",
        "Class accuracy: the shipped classifier's prediction on samples generated for balanced labels 0..9."
        if name == "digits-dit"
        else "",
        "",
        "Load: `dkdm-zoo` teacher name `"
        + name
        + "` (dkdm_zoo.teachers.reference), or the family loader on this folder.",
        "",
    ]
    return "\n".join(line for line in lines if line is not None)


def train_one(name: str, runs: Path, steps: int | None) -> None:
    import os

    import diffusers
    import torch

    from dkdm_zoo.config import build as builder
    from dkdm_zoo.config.catalog import resolve_recipe
    from dkdm_zoo.engine import train
    from dkdm_zoo.registry import build_registry
    from dkdm_zoo.runs import Run
    from dkdm_zoo.runs.writer import open_run

    registry = build_registry(entry_points=False)
    recipe = resolve_recipe(str(ROOT / "recipes" / f"train-{name}.toml"), registry)
    if steps is not None:
        recipe = recipe.set_train({"steps": steps}, where="--steps")
    out = runs / name
    with open_run(out, resume=False, overwrite=True) as writer:
        teacher = builder.build_teacher(recipe, registry)
        torch.manual_seed(recipe.train.seed)
        if name == "digits-dit":
            student = build_pixel_dit(teacher.spec, recipe.student.options)
        else:
            student = builder.build_student(recipe, teacher.spec, registry)
        method = builder.build_method(recipe, teacher, student, registry)
        writer.clear()
        start = time.perf_counter()
        train(recipe, teacher, student, method, Run(out), quiet=True)
        seconds = time.perf_counter() - start
    student.eval()
    dest = ASSETS / name
    export(name, out, student, teacher.spec, dest)
    info = {
        "train_seconds": seconds,
        "load_average": os.getloadavg()[0],
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "metrics": evaluate_teacher(name, out),
    }
    (out / "reference_eval.json").write_text(json.dumps(info, indent=2) + "\n")
    (dest / "MODEL_CARD.md").write_text(model_card(name, recipe, student, info))
    print(json.dumps({"teacher": name, **info}, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=(*TEACHERS, "all"))
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "reference", help="run folders")
    parser.add_argument("--steps", type=int, default=None, help="override train.steps (quick checks)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy CPU)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    for name in TEACHERS if args.name == "all" else (args.name,):
        train_one(name, args.runs, args.steps)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
