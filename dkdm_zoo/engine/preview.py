"""Preview grids during training: the EMA student's samples, written by the main process.

Under FSDP every process samples (each network call gathers the shards, a collective) and only the
main process decodes and writes the grid.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from dkdm_zoo.engine.parameters import trained_parameters
from dkdm_zoo.generation.images import PREVIEW_WIDTH, save_grid
from dkdm_zoo.methods.base import Method
from dkdm_zoo.runs import Run

# images per decoder call: a latent teacher's VAE at 512 px is the slow part on a CPU
PREVIEW_DECODE_CHUNK = 4


@torch.no_grad()
def preview(
    acc, run: Run, step: int, student: nn.Module, ema, method: Method, cfg, progress, sharded: bool = False
) -> None:
    """The EMA student's preview grid, with a progress bar (sampler steps, then decoding) and its
    wall time in metrics.jsonl: at train.preview_samples x train.preview_steps it can outlast a short
    run. ``sharded``: every process samples (collective network calls), the main one writes."""
    main = acc.is_main_process
    if main or sharded:
        start = time.perf_counter()
        params = trained_parameters(student)
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
        student.eval()
        n = cfg.preview_samples
        steps = getattr(method.student, "num_steps", 1) if method.one_step else cfg.preview_steps
        total = steps + math.ceil(n / PREVIEW_DECODE_CHUNK)
        with progress.side_task(f"preview {n} x {steps} steps", total) as advance:
            samples = method.sample(
                student,
                n,
                steps=cfg.preview_steps,
                generator=torch.Generator().manual_seed(cfg.seed),
                decode=False,
                progress=advance,
            )
            images = []
            if main:
                for chunk in samples.split(PREVIEW_DECODE_CHUNK):
                    images.append(method.teacher.decode(chunk).float().cpu())
                    advance(1)
        student.train()
        if ema is not None:
            ema.restore(params)
        if main:
            save_grid(torch.cat(images), run.preview_path(step), min_width=PREVIEW_WIDTH)
            run.append_metrics(
                {"event": "preview", "step": step, "samples": n, "wall_s": time.perf_counter() - start}
            )
    acc.wait_for_everyone()
