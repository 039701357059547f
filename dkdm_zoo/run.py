"""The run folder, dkdm-zoo's hand-off format: its one reader and writer.

    RUN/recipe.toml       the resolved recipe
    RUN/run.json          the manifest (``Manifest``, format_version 1): what was distilled from what
    RUN/metrics.jsonl     one JSON record per log step, plus "start" / "end" events (each with a unix "time")
    RUN/previews/         step-XXXXXXX.png sample grids of the EMA student
    RUN/checkpoints/      checkpoint-XXXXXXX/ folders and the ``latest`` pointer (dkdm_zoo.engine.checkpoint)
    RUN/student/          the final (EMA) student: save_pretrained, safetensors
    RUN/pipeline/         a diffusers pipeline of the student + README.md, a Hub model card (dkdm_zoo.export)
    RUN/eval.json         the end-of-run evaluation (``train.final_eval_samples``); RUN/samples.png its grid
    RUN/eval-AGAINST.json ``dkdm-zoo eval RUN --against AGAINST``

The engine writes through ``Run``; the ``run`` teacher, generation, evaluation and the CLI read
through it. Importing this module imports no torch and no teacher.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dkdm_zoo.errors import UserError
from dkdm_zoo.spec import TeacherSpec

if TYPE_CHECKING:
    from torch import Tensor, nn

    from dkdm_zoo.recipes import Recipe
    from dkdm_zoo.teachers.base import PipelineComponents, Teacher

FORMAT_VERSION = 1
MARKERS = ("recipe.toml", "run.json")


@dataclass(frozen=True)
class Manifest:
    """run.json: the teacher (registry name, options, spec), the student (name, preset, options, class),
    the method, and whether the student is a one-step generator."""

    teacher: str
    teacher_options: dict[str, Any]
    teacher_spec: TeacherSpec
    student: str
    student_class: str  # "module:Class", loaded only through model_classes.resolve_model_class
    method: str
    student_preset: str = "small"
    student_options: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, Any] = field(default_factory=dict)
    one_step: bool = False
    #: the train settings filled from the student's or method's declared defaults: key -> value and
    #: who declared it (``recipes.apply_train_defaults``); everything else came from the recipe or flags
    train_defaults: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, recipe: Recipe, spec: TeacherSpec, student: Any, one_step: bool) -> Manifest:
        """The manifest of a run of ``recipe`` training ``student`` (the module the engine optimises)."""
        from dkdm_zoo.model_classes import class_reference

        options = dict(recipe.student.options)
        preset = str(options.pop("preset", "small"))
        return cls(
            teacher=recipe.teacher.name,
            teacher_options=dict(recipe.teacher.options),
            teacher_spec=spec,
            student=recipe.student.name,
            student_class=class_reference(student),
            method=recipe.method.name,
            student_preset=preset,
            student_options=options,
            method_options=dict(recipe.method.options),
            one_step=bool(one_step),
            train_defaults={
                key: {"value": getattr(recipe.train, key), "from": who}
                for key, who in sorted(recipe.train_defaults.items())
            },
        )

    def to_dict(self) -> dict[str, Any]:
        data = {
            "format_version": FORMAT_VERSION,
            "teacher": {"name": self.teacher, "options": self.teacher_options},
            "teacher_spec": self.teacher_spec.to_dict(),
            "student": {
                "name": self.student,
                "preset": self.student_preset,
                "options": self.student_options,
                "class": self.student_class,
            },
            "method": {"name": self.method, "options": self.method_options},
            "one_step": self.one_step,
            "train_defaults": self.train_defaults,
        }
        return json.loads(json.dumps(data))  # JSON types only (tuples -> lists), as read back

    @classmethod
    def from_dict(cls, data: Any, where: Any = "run.json") -> Manifest:
        if not isinstance(data, dict):
            raise UserError(f"{where}: run.json must hold a JSON object")
        if data.get("format_version") != FORMAT_VERSION:
            raise UserError(
                f"{where}: run.json format_version {data.get('format_version')!r} is not {FORMAT_VERSION}: "
                "this dkdm-zoo cannot read it; use the version that wrote it"
            )
        sections = {"teacher": ("name",), "student": ("name", "class"), "method": ("name",)}
        for section, keys in sections.items():
            part = data.get(section)
            if not isinstance(part, dict) or any(not isinstance(part.get(k), str) for k in keys):
                raise UserError(f"{where}: run.json needs '{section}' with {', '.join(keys)}")
            if not isinstance(part.get("options", {}), dict):
                raise UserError(f"{where}: run.json '{section}.options' must be an object")
        if not isinstance(data.get("teacher_spec"), dict):
            raise UserError(f"{where}: run.json needs 'teacher_spec'")
        try:
            spec = TeacherSpec.from_dict(data["teacher_spec"])
        except (TypeError, ValueError) as exc:
            raise UserError(f"{where}: run.json has an invalid teacher_spec: {exc}") from None
        teacher, student, method = data["teacher"], data["student"], data["method"]
        return cls(
            teacher=teacher["name"],
            teacher_options=dict(teacher.get("options") or {}),
            teacher_spec=spec,
            student=student["name"],
            student_class=student["class"],
            method=method["name"],
            student_preset=str(student.get("preset", "small")),
            student_options=dict(student.get("options") or {}),
            method_options=dict(method.get("options") or {}),
            one_step=data.get("one_step") is True,
            train_defaults=dict(data.get("train_defaults") or {}),
        )


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Run:
    """A run folder: its layout, manifest, metrics, student and exports."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path).expanduser()
        self._manifest: Manifest | None = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    # -- layout -------------------------------------------------------------------------------------
    manifest_path = property(lambda self: self.path / "run.json")
    recipe_path = property(lambda self: self.path / "recipe.toml")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    previews_dir = property(lambda self: self.path / "previews")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    student_dir = property(lambda self: self.path / "student")
    pipeline_dir = property(lambda self: self.path / "pipeline")
    eval_path = property(lambda self: self.path / "eval.json")
    samples_path = property(lambda self: self.path / "samples.png")

    def eval_path_for(self, against: str) -> Path:
        return self.path / f"eval-{against}.json"

    def preview_path(self, step: int) -> Path:
        return self.previews_dir / f"step-{step:07d}.png"

    @staticmethod
    def is_run(path: str | os.PathLike[str]) -> bool:
        path = Path(path).expanduser()
        return path.is_dir() and (path / "run.json").is_file()

    @property
    def finished(self) -> bool:
        return (self.student_dir / "config.json").is_file()

    # -- lifecycle (a writing command opens the folder with dkdm_zoo.run_writer.open_run) -------------
    def start(self, recipe: Recipe, manifest: Manifest) -> None:
        """recipe.toml and run.json, written when training starts (and again on resume)."""
        self.path.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.recipe_path, recipe.dumps())
        self.write_manifest(manifest)

    def write_manifest(self, manifest: Manifest) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.manifest_path, json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
        self._manifest = manifest

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            if not self.manifest_path.is_file():
                raise UserError(
                    f"{self.path} is not a dkdm-zoo run directory (no run.json): pass the output folder of a run"
                )
            try:
                data = json.loads(self.manifest_path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise UserError(f"cannot read {self.manifest_path}: {exc}") from None
            self._manifest = Manifest.from_dict(data, self.manifest_path)
        return self._manifest

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps({**record, "time": time.time()}, sort_keys=True) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of metrics.jsonl; a last line cut short (a killed process) is skipped, any
        other unreadable line is a one-line error naming the file and the line."""
        file = self.metrics_path
        if not file.exists():
            return []
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {file}: {exc}") from None
        lines = text.splitlines()
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                if number == len(lines) and not text.endswith("\n"):
                    break  # cut short by a kill mid-write
                raise UserError(f"{file}:{number} is not a JSON record: the file is corrupt") from None
            if not isinstance(record, dict):
                raise UserError(f"{file}:{number} is not a JSON object: the file is corrupt")
            records.append(record)
        return records

    def save_preview(self, step: int, images: Tensor) -> Path:
        from dkdm_zoo.images import save_grid

        return save_grid(images, self.preview_path(step))

    # -- reading the student and its teacher ------------------------------------------------------------
    def require_finished(self) -> None:
        if not self.finished:
            raise UserError(
                f"{self.path} has no student/ folder: the run did not finish; resume it or pick a finished run"
            )

    def load_student(self, registry: Any, *, dtype: Any = None) -> nn.Module:
        """The final student (eval mode). Its class, named by run.json, is imported only if diffusers,
        dkdm_zoo or a plugin of ``registry`` that provides students defines it (checked first);
        weights load from safetensors only, whatever any file says."""
        from dkdm_zoo.model_classes import plugin_packages, resolve_model_class
        from dkdm_zoo.students.one_step import OneStepGenerator

        manifest = self.manifest
        self.require_finished()
        allowed = plugin_packages(registry)
        cls = resolve_model_class(manifest.student_class, allowed_packages=allowed, where=self.manifest_path)
        if issubclass(cls, OneStepGenerator):  # its config names the backbone class: the same check first
            config_path = self.student_dir / "config.json"
            try:
                backbone = json.loads(config_path.read_text()).get("backbone_class", "")
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
                raise UserError(f"cannot read {config_path}: {exc}") from None
            resolve_model_class(str(backbone), allowed_packages=allowed, where=config_path)
        if not any(self.student_dir.glob("*.safetensors")):
            raise UserError(
                f"{self.student_dir} has no .safetensors weights: run folders load safetensors only"
            )
        kwargs: dict[str, Any] = {"use_safetensors": True}
        if dtype is not None:
            kwargs["torch_dtype"] = dtype
        try:
            model = cls.from_pretrained(self.student_dir, **kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            for weights, problem in _unreadable_safetensors(self.student_dir):
                raise UserError(
                    f"{weights} is unreadable ({problem}): the run's student weights are truncated or corrupt; "
                    f"write them again from its last checkpoint with `dkdm-zoo distill --out {self.path} --resume`"
                ) from None
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot load the student in {self.student_dir}: {first}") from None
        return model.eval()

    def original_teacher(self, registry: Any, *, allow_pickle: bool = False) -> Teacher:
        """The teacher named in run.json, built through ``registry`` with its recorded options.

        Pickle stays off unless the person running the command passes ``allow_pickle``: a recorded
        ``allow_pickle`` option is overridden, never obeyed.
        """
        options = dict(self.manifest.teacher_options)
        if "allow_pickle" in options or allow_pickle:
            options["allow_pickle"] = allow_pickle
        entry = registry.get("teachers", self.manifest.teacher)
        options = entry.check_options(options, where=str(self.manifest_path))  # the file's values, typed
        return registry.create("teachers", self.manifest.teacher, **options)

    def pipeline_components(self, registry: Any) -> PipelineComponents:
        """What a pipeline of this run reuses from its teacher (VAE, text encoder): built only when needed."""
        from dkdm_zoo.teachers.base import PipelineComponents

        spec = self.manifest.teacher_spec
        if spec.space == "pixel" and spec.conditioning != "text":
            return PipelineComponents()
        return self.original_teacher(registry).pipeline_components()

    # -- writing the student and its pipeline -----------------------------------------------------------
    def save_student(self, student: nn.Module) -> Path:
        """``student/`` (save_pretrained, safetensors), written beside and renamed into place."""
        tmp = self.path / ".tmp-student"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            student.save_pretrained(tmp, safe_serialization=True)
            _replace_folder(tmp, self.student_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.student_dir

    def finish(self, student: nn.Module, teacher: Teacher) -> list[str]:
        """The end of training: ``student/``, then ``pipeline/`` with its model card. Returns what was
        written; a pipeline that cannot be built (a plugin teacher without its VAE, say) is a warning,
        not a lost run."""
        self.save_student(student)
        try:
            self.export(student, teacher.pipeline_components())
        except UserError as exc:
            warnings.warn(f"{self.path}: no diffusers pipeline exported: {exc}", stacklevel=2)
            return ["student"]
        return ["student", "pipeline"]

    def export(
        self, student: nn.Module, components: PipelineComponents, folder: str | os.PathLike[str] | None = None
    ) -> Path:
        """A diffusers pipeline of ``student`` and its model card in ``folder`` (default RUN/pipeline/).

        The folder is written beside and renamed into place; an existing folder is replaced only if
        it is empty or a pipeline folder (has model_index.json).
        """
        from dkdm_zoo.card import write_model_card
        from dkdm_zoo.export import save_pipeline

        out = Path(folder).expanduser() if folder is not None else self.pipeline_dir
        if out.exists() and (
            not out.is_dir() or (any(out.iterdir()) and not (out / "model_index.json").is_file())
        ):
            raise UserError(
                f"{out} exists and is not a pipeline folder (no model_index.json): pass a new or empty folder"
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".tmp-{out.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            save_pipeline(student, self.manifest.teacher_spec, components, tmp)
            write_model_card(self, tmp, location=out)
            _replace_folder(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # a failed export leaves nothing half-written
        return out

    def write_card(self, folder: str | os.PathLike[str] | None = None) -> Path:
        """(Re)write the model card of an exported pipeline (e.g. after the end-of-run evaluation)."""
        from dkdm_zoo.card import write_model_card

        return write_model_card(self, Path(folder) if folder is not None else self.pipeline_dir)


def _unreadable_safetensors(folder: Path) -> list[tuple[Path, str]]:
    """The safetensors files in ``folder`` that cannot be read in full, with the reader's complaint."""
    from safetensors import safe_open

    bad = []
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as fh:
                for key in fh.keys():  # noqa: SIM118 - safe_open has keys(), no iteration
                    fh.get_tensor(key)
        except Exception as exc:  # noqa: BLE001 - any failure to read it back is the answer
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            bad.append((path, text))
    return bad


def _replace_folder(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``; an existing ``target`` is moved aside first and deleted last."""
    old = target.with_name(f".old-{target.name}")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
