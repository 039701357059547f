"""Where a K-step SiD / Diff-Instruct generator starts: its samples at initialisation (the teacher's
own weights at the generator's K timesteps, each later step on the previous x0 re-noised with fresh
noise) beside the teacher's DDIM at the same K, at equal network calls per image; FD against the
real digits in the shipped classifier's feature space (500 samples, seed 0).

    python tools/few_step_init.py --teacher digits-ddpm --ks 1 2 4
"""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", default="digits-ddpm")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from dkdm_zoo.evaluation.metrics import evaluate
    from dkdm_zoo.evaluation.report import timed_generate
    from dkdm_zoo.generation.sources import ImageSource, load_source
    from dkdm_zoo.methods.score_distill import SiD
    from dkdm_zoo.registry import build_registry
    from dkdm_zoo.sampling.settings import SamplingSettings

    torch.set_num_threads(2)
    registry = build_registry()
    teacher_source = load_source(args.teacher, registry, device="cpu")
    teacher = teacher_source.teacher
    labels = "all" if teacher.spec.conditioning == "class" else None
    rows = []
    for k in args.ks:
        settings = SamplingSettings(steps=k, seed=args.seed)
        images, used, info = timed_generate(teacher_source, args.n, settings, labels=labels, progress=False)
        rows.append({"model": f"teacher DDIM/Euler {k}", "nfe": info["nfe_per_image"],
                     "fd": evaluate(images, "data", labels=used)["fd"]})  # fmt: skip
        student = registry.create("students", "unet", teacher.spec, preset="small")
        if args.teacher == "digits-ddpm":  # its own architecture: the generator starts as the teacher
            student = registry.create(
                "students", "unet", teacher.spec, preset="small", block_out_channels=[32, 64, 64],
                layers_per_block=1, attention_resolutions=[4], min_resolution=2, dropout=0.0,
            )  # fmt: skip
        method = SiD(teacher, student, generator_steps=k, init_from_teacher=True)
        generator = ImageSource(
            f"SiD K={k} at init", teacher.spec, generator=method.student, conditioner=lambda: teacher
        )
        images, used, info = timed_generate(generator, args.n, settings, labels=labels, progress=False)
        rows.append({"model": f"K-step generator at init, K={k}", "nfe": info["nfe_per_image"],
                     "timesteps": method.student.config.step_timesteps or [method.student.config.timestep],
                     "fd": evaluate(images, "data", labels=used)["fd"]})  # fmt: skip
        print(json.dumps(rows[-2]), json.dumps(rows[-1]), flush=True)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
