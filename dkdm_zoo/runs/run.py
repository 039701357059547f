"""The run folder, dkdm-zoo's hand-off format: its layout, manifest and metrics. Torch-free.

    RUN/recipe.toml       the resolved recipe
    RUN/run.json          the manifest (``runs.manifest.Manifest``): what was distilled from what
    RUN/metrics.jsonl     one JSON record per log step, plus "start" / "end" / "preview" events (each with a unix "time")
    RUN/previews/         step-XXXXXXX.png sample grids of the EMA student
    RUN/checkpoints/      checkpoint-XXXXXXX/ folders and the ``latest`` pointer (dkdm_zoo.engine.checkpoint)
    RUN/student/          the final (EMA) student: save_pretrained, safetensors (``runs.student``)
    RUN/pipeline/         a diffusers pipeline of the student + README.md, a Hub model card (``dkdm_zoo.export``)
    RUN/eval.json         the end-of-run evaluation (``train.final_eval_samples``); RUN/samples.png its grid
    RUN/eval-AGAINST.json ``dkdm-zoo eval RUN --against AGAINST``

``Run`` is the only code that knows this layout. The engine receives one and writes through it;
``runs.writer`` opens a folder for one writing command; ``runs.student`` saves and loads the
student and rebuilds the original teacher; ``dkdm_zoo.export`` writes ``pipeline/``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dkdm_zoo.errors import UserError
from dkdm_zoo.runs.manifest import Manifest

if TYPE_CHECKING:
    from dkdm_zoo.config.recipes import Recipe

MARKERS = ("recipe.toml", "run.json")


class Run:
    """A run folder: where each part of it lives, its manifest and its metrics."""

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

    def require_finished(self) -> None:
        if not self.finished:
            raise UserError(
                f"{self.path} has no student/ folder: the run did not finish; resume it or pick a finished run"
            )

    def summary(self) -> str:
        """What the folder holds, for a message: "recipe.toml, run.json, metrics.jsonl (last logged
        step 2), student/ (the run finished)"."""
        if not self.path.is_dir():
            return "nothing"
        parts = []
        for child in sorted(self.path.iterdir()):
            if child.name.startswith("."):
                continue
            text = f"{child.name}/" if child.is_dir() else child.name
            if child == self.metrics_path:
                try:
                    steps = [r["step"] for r in self.read_metrics() if "event" not in r and "step" in r]
                except UserError:
                    steps = []
                text += f" (last logged step {steps[-1]})" if steps else " (no logged step)"
            elif child == self.student_dir and self.finished:
                text += " (the run finished)"
            elif child == self.checkpoints_dir:
                names = sorted(p.name for p in child.iterdir())
                text += f" ({', '.join(names)})" if names else " (empty)"
            parts.append(text)
        return ", ".join(parts) or "nothing"

    # -- the manifest (a writing command opens the folder with dkdm_zoo.runs.writer.open_run) --------
    def start(self, recipe: Recipe, manifest: Manifest) -> None:
        """recipe.toml and run.json, written when training starts (and again on resume)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.recipe_path, recipe.dumps())
        self.write_manifest(manifest)

    def write_manifest(self, manifest: Manifest) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.manifest_path, json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
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

    # -- metrics ------------------------------------------------------------------------------------
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


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file and a rename: never half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:  # a full disk, Ctrl-C: no half-written temp file left behind
        tmp.unlink(missing_ok=True)
        raise


def replace_folder(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``; an existing ``target`` is moved aside first and deleted last."""
    old = target.with_name(f".old-{target.name}")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
