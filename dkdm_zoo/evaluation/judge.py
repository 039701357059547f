"""A data-free judge for prompt-conditioned students: `dkdm-zoo eval RUN --prompts FILE`.

The student and its teacher generate from the same prompts and the same noise (``ImageSource``
draws the noise from the seed, per image); the report holds

- FD between the two image sets in CLIP's image-embedding space (always) and in Inception's pool
  features (torch-fidelity's FID network through torchmetrics, when its local weights are given:
  ``--inception-weights`` or $DKDM_ZOO_INCEPTION_WEIGHTS; otherwise the reason it was skipped);
- the CLIP score of each against its prompt, per prompt and on average;
- one PNG per prompt, teacher | student side by side (a row per image of that prompt).

A prompt file is plain text, one prompt per line (blank lines and lines starting with "#" are
skipped); ``default`` is the set shipped with the package (100 varied prompts). A class-conditional
source takes class ids, one per line (the CLIP text is the line itself).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import torch

from dkdm_zoo.errors import UserError
from dkdm_zoo.evaluation.clip import ClipJudge
from dkdm_zoo.evaluation.metrics import frechet_distance
from dkdm_zoo.evaluation.report import timed_generate
from dkdm_zoo.generation.images import save_grid
from dkdm_zoo.sampling.settings import SamplingSettings

DEFAULT_PROMPTS = "default"
#: the shipped prompt set (``--prompts default``)
DEFAULT_PROMPTS_FILE = Path(__file__).resolve().parents[1] / "assets" / "prompts" / "judge-prompts.txt"
#: each grid image is enlarged (nearest-neighbour) until a grid is at least this wide
GRID_MIN_WIDTH = 256


def read_prompts(file: str | Path) -> tuple[list[str], str]:
    """The prompts of a plain-text file (one per line) and how the report names it; ``default``
    (when no such file exists here) is the shipped set."""
    path = Path(file).expanduser()
    if str(file) == DEFAULT_PROMPTS and not path.exists():
        path, name = DEFAULT_PROMPTS_FILE, "default (dkdm_zoo/assets/prompts/judge-prompts.txt)"
    else:
        name = str(file)
    if not path.is_file():
        raise UserError(
            f"--prompts {file}: no such file; pass a text file with one prompt per line, or 'default'"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(
            f"--prompts {file}: not UTF-8 text; pass a text file with one prompt per line"
        ) from None
    prompts = [line.strip() for line in text.splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise UserError(f"--prompts {file}: no prompts in it (one per line; '#' starts a comment)")
    return prompts, name


def class_ids(prompts: list[str], name: str, num_classes: int) -> list[int]:
    """A class-conditional source's prompt lines as class ids (one line naming the first bad line)."""
    labels = []
    for line in prompts:
        if not re.fullmatch(r"\d+", line) or int(line) >= num_classes:
            raise UserError(
                f"--prompts {name}: {line!r} is not a class id of this class-conditional source "
                f"(0..{num_classes - 1}); write one class id per line"
            )
        labels.append(int(line))
    return labels


def judge_prompts(
    source: Any,
    reference: Any,
    prompts: list[str],
    clip: ClipJudge,
    *,
    settings: SamplingSettings,
    teacher_steps: int = 50,
    per_prompt: int = 1,
    grid_dir: Path | None = None,
    inception_weights: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``source`` (a student) against ``reference`` (its teacher) on ``prompts``; writes one
    grid per prompt into ``grid_dir`` (teacher | student) when given."""
    if per_prompt < 1:
        raise UserError(f"--per-prompt must be at least 1, got {per_prompt}")
    spec = source.spec
    if spec.conditioning == "none":
        raise UserError(f"{source.name} is unconditional: it takes no prompts; use --against teacher")
    expanded = [p for p in prompts for _ in range(per_prompt)]
    n = len(expanded)
    inputs: dict[str, Any] = {"prompts": expanded}
    if spec.conditioning == "class":
        inputs = {"labels": class_ids(expanded, "the prompt file", int(spec.num_classes))}
    student_images, _, student_info = timed_generate(source, n, settings, **inputs, progress=progress)
    teacher_settings = dataclasses.replace(settings, steps=teacher_steps, guidance_scale=None)
    teacher_images, _, teacher_info = timed_generate(
        reference, n, teacher_settings, **inputs, progress=progress
    )

    text = clip.text_features(prompts).repeat_interleave(per_prompt, dim=0)
    student_features = clip.image_features(student_images)
    teacher_features = clip.image_features(teacher_images)
    student_scores = clip.scores(student_features, text)
    teacher_scores = clip.scores(teacher_features, text)
    fd: dict[str, Any] = {"clip": _fd(student_features, teacher_features)}
    skipped = None
    try:
        from dkdm_zoo.evaluation.fid_inception import inception_fid

        fd["inception"] = inception_fid(student_images, teacher_images, inception_weights) if n >= 2 else None
    except UserError as exc:  # no local weights, or the library is missing: say so, keep the rest
        fd["inception"], skipped = None, str(exc)

    rows = []
    for i, prompt in enumerate(prompts):
        span = slice(i * per_prompt, (i + 1) * per_prompt)
        row: dict[str, Any] = {
            "prompt": prompt,
            "clip_score_teacher": float(teacher_scores[span].mean()),
            "clip_score_student": float(student_scores[span].mean()),
        }
        if grid_dir is not None:
            pairs = torch.stack([teacher_images[span], student_images[span]], dim=1).flatten(0, 1)
            path = save_grid(
                pairs, grid_dir / f"{i:03d}-{_slug(prompt)}.png", nrow=2, min_width=GRID_MIN_WIDTH
            )
            row["grid"] = str(path)
        rows.append(row)
    result: dict[str, Any] = {
        "source": source.name,
        "teacher": reference.name,
        "n_prompts": len(prompts),
        "per_prompt": per_prompt,
        "seed": settings.seed,
        "clip_model": clip.name,
        "student": {**student_info, "clip_score": float(student_scores.mean())},
        "teacher_samples": {**teacher_info, "clip_score": float(teacher_scores.mean())},
        "fd": fd,
        "per_prompt_scores": rows,
    }
    if skipped is not None:
        result["inception_skipped"] = skipped
    if grid_dir is not None:
        result["grids"] = str(grid_dir)
    return result


def _fd(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """FD of two feature sets (None below 2 samples, where a covariance does not exist)."""
    return frechet_distance(a.double(), b.double()) if len(a) >= 2 else None


def _slug(prompt: str, length: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:length] or "prompt"
