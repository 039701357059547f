"""One place that turns a SOURCE into images: a registered teacher (NAME or NAME@PATH) or a run directory.

`sample`, `eval` and the end-of-run report all go through ``load_source(...).generate(n, settings)``
(``dkdm_zoo.sampling.SamplingSettings``):

- a teacher samples with its own sampler (``Teacher.sample``) and decodes (VAE for latent teachers);
- a multi-step run samples its student on the teacher's schedule through the ``run`` teacher;
- a one-step run (BOOT) calls its generator exactly once per batch; conditions and decoding come
  from the run's original teacher when they need a network (text encoder, VAE).

Run folders are read through ``dkdm_zoo.runs.Run``; the registry of the command is passed in.

Noise, sampler noise and random conditions come from separate generators seeded from ``seed``, so
the same seed gives the same images (and, for DDIM, the same images whatever the batch size).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dkdm_zoo.errors import UserError
from dkdm_zoo.runs import Run
from dkdm_zoo.runs.student import load_student, original_teacher
from dkdm_zoo.sampling.chain import sample_student
from dkdm_zoo.sampling.progress import progress_bar
from dkdm_zoo.sampling.settings import SamplingSettings
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.students.base import takes_condition_extras
from dkdm_zoo.students.one_step import draw_step_noise
from dkdm_zoo.teachers.base import Condition, Teacher

Labels = Sequence[int] | str | None  # a list of class ids, or "all" for balanced labels 0..K-1


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def expand_labels(labels: Labels, n: int, spec: TeacherSpec) -> list[int] | None:
    """User labels cycled to length n; "all" means 0..K-1 repeated (balanced classes)."""
    if labels is None:
        return None
    if isinstance(labels, str):
        if labels != "all":
            raise UserError(f"labels: expected a list of class ids or 'all', got {labels!r}")
        if spec.conditioning != "class":
            what = "text-conditional" if spec.conditioning == "text" else "unconditional"
            raise UserError(f"this source is {what}: it takes no class labels; drop the labels")
        labels = list(range(int(spec.num_classes)))
    labels = [int(v) for v in labels]
    if not labels:
        raise UserError("labels: the list is empty; pass at least one class id or 'all'")
    return [labels[i % len(labels)] for i in range(n)]


def expand_prompts(prompts: Sequence[str] | None, n: int) -> list[str] | None:
    if prompts is None:
        return None
    prompts = [str(p) for p in prompts]
    if not prompts:
        raise UserError("prompts: the list is empty")
    return [prompts[i % len(prompts)] for i in range(n)]


class ImageSource:
    """Something that generates decoded images in [-1, 1]: a teacher, a run's student, a one-step generator."""

    def __init__(
        self,
        name: str,
        spec: TeacherSpec,
        *,
        teacher: Teacher | None = None,
        generator: torch.nn.Module | None = None,
        conditioner: Callable[[], Teacher] | None = None,
        run: Run | None = None,
        device: torch.device | str | None = None,
    ):
        if (teacher is None) == (generator is None):
            raise ValueError("an ImageSource holds either a teacher or a one-step generator")
        self.name = name
        self.spec = spec
        self.teacher = teacher
        self.generator = generator
        self._conditioner_factory = conditioner
        self._conditioner: Teacher | None = None
        self.run = run
        self.device = torch.device(device) if device is not None else default_device()
        if teacher is not None:
            teacher.to(self.device)
        else:
            generator.to(self.device).eval().requires_grad_(False)

    @property
    def one_step(self) -> bool:
        return self.generator is not None

    @property
    def is_run(self) -> bool:
        return self.run is not None

    @property
    def conditioner(self) -> Teacher:
        """The teacher that turns user input into conditions and samples into pixels."""
        if self.teacher is not None:
            return self.teacher
        if self._conditioner is None:
            self._conditioner = self._conditioner_factory().to(self.device)
        return self._conditioner

    def nfe_per_image(self, steps: int) -> int:
        """Network evaluations per image (one per sampler step, K for a K-step generator; classifier-free
        guidance doubles the batch)."""
        return self.generator.num_steps if self.one_step else steps

    def _conditions(
        self, labels: list[int] | None, prompts: list[str] | None, n: int, gen: torch.Generator
    ) -> Condition | None:
        if labels is not None or prompts is not None:
            return self.conditioner.make_condition(labels=labels, prompts=prompts)
        if self.spec.conditioning == "none":
            return None
        return self.conditioner.sample_conditions(n, gen)

    @torch.no_grad()
    def generate(
        self,
        n: int,
        settings: SamplingSettings | None = None,
        *,
        labels: Labels = None,
        prompts: Sequence[str] | None = None,
        progress: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """n images (N, C, H, W) in [-1, 1] on CPU, and the class labels they were generated for (or
        None); ``progress`` shows a bar on an interactive terminal (the caller decides for its process)."""
        settings = settings if settings is not None else SamplingSettings()
        if n <= 0:
            raise UserError(f"the number of samples must be positive, got {n}")
        T = self.spec.num_train_timesteps
        if not self.one_step and settings.steps > T:
            raise UserError(f"sampler steps must be in 1..{T} (the schedule's length), got {settings.steps}")
        if self.one_step and settings.guidance_scale is not None:
            raise UserError(
                f"{self.name} is a one-step generator: its guidance was distilled in; drop the guidance scale"
            )
        labels_n = expand_labels(labels, n, self.spec)
        prompts_n = expand_prompts(prompts, n)
        if labels_n is not None:  # checked up front: a wrong label fails before any sampling
            self.conditioner.make_condition(labels=sorted(set(labels_n)))
        elif prompts_n is not None and self.spec.conditioning != "text":
            self.conditioner.make_condition(prompts=prompts_n[:1])

        seed, batch_size = settings.seed, settings.batch_size
        noise_gen = torch.Generator().manual_seed(seed)
        cond_gen = torch.Generator().manual_seed(seed + 1)
        step_gen = torch.Generator(device=self.device).manual_seed(seed + 2)
        noise = torch.randn((n, *self.spec.sample_shape), generator=noise_gen)
        # a K-step generator's fresh noise of steps 2..K: per image, from the same stream (as its pipeline draws it)
        step_noise = draw_step_noise(self.generator, tuple(noise.shape), noise_gen) if self.one_step else None

        batches = math.ceil(n / batch_size)
        per_batch = self.nfe_per_image(settings.steps)
        images, used_labels = [], []
        # one more tick per batch for decoding: a latent teacher's VAE can outlast its sampler steps
        total = batches * (per_batch + 1)
        enabled = progress and sys.stderr.isatty()
        with progress_bar(total, f"sampling {self.name}", enabled=enabled, transient=True) as advance:
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                cond = self._conditions(
                    None if labels_n is None else labels_n[start:stop],
                    None if prompts_n is None else prompts_n[start:stop],
                    stop - start,
                    cond_gen,
                )
                cond = cond.to(self.device) if cond is not None else None
                x_T = noise[start:stop].to(self.device)
                if self.one_step:
                    extras = takes_condition_extras(self.generator)
                    kwargs = cond.model_kwargs(extras=extras) if cond is not None else {}
                    schedule = self.conditioner.schedule
                    samples = sample_student(
                        self.generator,
                        self.spec,
                        schedule,
                        x_T,
                        kwargs,
                        progress=advance,
                        step_noise=None if step_noise is None else step_noise[:, start:stop],
                    )
                else:
                    samples = self.teacher.sample(
                        stop - start,
                        steps=settings.steps,
                        sampler=settings.sampler,
                        cond=cond,
                        guidance_scale=settings.guidance_scale,
                        generator=step_gen,
                        noise=x_T,
                        progress=advance,
                    )
                images.append(self.conditioner.decode(samples).float().clamp(-1, 1).cpu())
                advance(1)
                if cond is not None and cond.labels is not None:
                    used_labels.append(cond.labels.cpu())
        return torch.cat(images), (torch.cat(used_labels) if used_labels else None)

    def teacher_source(self, registry: Any) -> ImageSource:
        """The source's own teacher (the teacher recorded in a run's run.json), for data-free comparison.

        A teacher is its own reference: ``eval TEACHER --steps 4 --against teacher`` scores its 4-step
        samples against its ``--teacher-steps`` samples.
        """
        if self.run is None:
            return self
        name = self.run.manifest.teacher
        if name == "spec":
            raise UserError(
                f"{self.run.path} was trained from the network-free 'spec' teacher: there are no teacher "
                "samples to compare against; use --against data"
            )
        teacher = original_teacher(self.run, registry)
        return ImageSource(name, teacher.spec, teacher=teacher, device=self.device)


def load_source(
    source: str,
    registry: Any,
    *,
    teacher_options: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    announce: Callable[[str], None] | None = None,
) -> ImageSource:
    """A run directory (has run.json), or a registered teacher as NAME, FAMILY@PATH or a folder / hub id
    whose files name the family (plus options); ``announce`` gets the line saying what was detected."""
    path = Path(source).expanduser()
    if Run.is_run(path):
        if teacher_options:
            raise UserError(
                f"{source} is a run directory: teacher options ({', '.join(sorted(teacher_options))}) "
                "apply only to teacher names"
            )
        return _load_run(path, registry, device)
    from dkdm_zoo.config.resolve import resolve_teacher

    ref = resolve_teacher(source, registry)
    if ref.detected is not None and announce is not None:
        announce(ref.detected)
    name = ref.name
    options = dict(teacher_options or {})
    if ref.source is not None:
        options["path"] = ref.source
    teacher = registry.create("teachers", name, **{k: v for k, v in options.items() if v is not None})
    if not teacher.modules():
        raise UserError(
            f"teacher '{name}' has no network, so it cannot sample: pass a trained teacher or a run directory"
        )
    return ImageSource(name, teacher.spec, teacher=teacher, device=device)


def _load_run(run_dir: Path, registry: Any, device: torch.device | str | None) -> ImageSource:
    from dkdm_zoo.students.one_step import is_one_step
    from dkdm_zoo.teachers.run import from_run

    run = Run(run_dir)
    manifest = run.manifest
    if not manifest.one_step:
        teacher = from_run(run, registry)
        return ImageSource(run.name, teacher.spec, teacher=teacher, run=run, device=device)

    generator = load_student(run, registry)
    from dkdm_zoo.teachers.as_student import bind_run_student

    bind_run_student(generator, lambda: original_teacher(run, registry))
    if not is_one_step(generator):
        raise UserError(
            f"{run.manifest_path}: a one-step run whose student is a {type(generator).__name__}, "
            "not a OneStepGenerator: this dkdm-zoo cannot sample it"
        )
    spec = manifest.teacher_spec

    def conditioner() -> Teacher:
        # Latent decoding and text encoding need the original teacher; labels and pixels need only the spec.
        if spec.space == "latent" or spec.conditioning == "text":
            return original_teacher(run, registry)
        from dkdm_zoo.teachers.spec_only import SpecTeacher

        return SpecTeacher(dataclasses.replace(spec, family=run.name))

    return ImageSource(run.name, spec, generator=generator, conditioner=conditioner, run=run, device=device)
