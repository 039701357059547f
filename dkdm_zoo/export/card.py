"""The model card (README.md) of an exported pipeline, in the form the Hugging Face Hub reads.

YAML front matter (``library_name: diffusers``, ``pipeline_tag``, ``base_model``, ``tags`` with
``dkdm-zoo`` and the method, the teacher card's ``license`` when it has one), then what was
distilled from what, the method and its settings, teacher forwards, wall time, the end-of-run
metrics and sample grid when they exist, and how to load the pipeline. Everything comes from the
run folder, so ``dkdm-zoo export`` rewrites the card of a run made before cards existed.
"""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

from dkdm_zoo.errors import UnknownNameError
from dkdm_zoo.export.lora_card import is_lora_run, lora_card_lines, read_info
from dkdm_zoo.runs import Run

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
GRID_NAME = "samples.png"


def is_hub_id(value: Any) -> bool:
    return isinstance(value, str) and bool(HUB_ID.match(value)) and not Path(value).expanduser().exists()


def base_model(run: Run) -> str:
    """The teacher as a card names it: its hub id, the name of its local folder (a full path would
    name this machine), else its registry name."""
    path = run.manifest.teacher_options.get("path")
    if not path:
        return run.manifest.teacher
    return str(path) if is_hub_id(path) else Path(str(path)).name or str(path)


def teacher_license(run: Run) -> str | None:
    """The ``license`` of the teacher's own card: README.md in its folder, or on the hub (cache first)."""
    from huggingface_hub import ModelCard

    source = run.manifest.teacher_options.get("path")
    if not source:
        return None
    try:
        folder = Path(str(source)).expanduser()
        if folder.is_dir():
            card = folder / "README.md"
            return ModelCard.load(card).data.license if card.is_file() else None
        if is_hub_id(source):
            return ModelCard.load(str(source)).data.license
    except Exception:  # noqa: BLE001 - a missing or unreadable teacher card only means no license to carry
        return None
    return None


def _training(run: Run) -> dict[str, Any]:
    """Steps, processes, teacher forwards and wall time from metrics.jsonl: each segment (a start and the
    records after it, resumed runs have several) counts from its start, less the set-up it records
    (building the optimisers, the pool initialisation), to its last record."""
    facts: dict[str, Any] = {}
    wall = 0.0
    first = last = None
    for record in [*run.read_metrics(), {"event": "start"}]:
        if record.get("event") == "start":
            if first is not None and last is not None:
                wall += last - first
            first = last = record.get("time")
            setup = record.get("setup_s")
            if isinstance(setup, int | float) and first is not None:
                first -= setup  # the segment began when training was entered (pool init included)
            if "world_size" in record:
                facts["world_size"] = record["world_size"]
            continue
        last = record.get("time", last)
        if "step" in record:
            facts["steps"] = record["step"]
        if "teacher_forwards" in record:
            facts["teacher_forwards"] = record["teacher_forwards"]
    if wall > 0:
        facts["wall_s"] = wall
    return facts


def _train_settings(run: Run) -> dict[str, Any]:
    try:
        return tomllib.loads(run.recipe_path.read_text()).get("train", {})
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def _student_parameters(run: Run) -> int | None:
    from safetensors import safe_open

    files = sorted(run.student_dir.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), "np") as fh:
            for key in fh.keys():
                count = 1
                for dim in fh.get_slice(key).get_shape():
                    count *= dim
                total += count
    return total


def _metrics_rows(run: Run) -> list[str]:
    rows = []
    reports = [(run.eval_path, "end of run")] + [
        (run.eval_path_for(a), f"`dkdm-zoo eval --against {a}`") for a in ("data", "teacher")
    ]
    for path, what in reports:
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        against = report.get("against", "data")
        models = report.get("models") or {run.name: report}
        for name, row in models.items():
            m = row.get("metrics", {})
            cells = [m.get(k) for k in ("fd", "precision", "recall", "accuracy")]
            text = ["-" if v is None else f"{v:.3f}" for v in cells]
            rows.append(
                f"| {name} | {what}, vs {against}, n={report.get('n', '?')} | {row.get('nfe_per_image', '-')} | "
                + " | ".join(text)
                + " |"
            )
    return rows


def _call(kind: str, folder: Path, run: Run, at: Any) -> str | None:
    """The arguments with which the card calls a pipeline of ``kind`` (one that loads LoRAs: the stock
    classes and StableDiffusionPipeline) to sample as dkdm-zoo samples; None for the others."""
    from dkdm_zoo.export.stock import STOCK_PIPELINES, call_arguments

    if kind in STOCK_PIPELINES:  # the teacher's own pipeline class, called as dkdm-zoo samples
        args = call_arguments(kind, folder, run.manifest.teacher_spec, run.manifest.teacher_options, at)
        return ", ".join(f"{k}={v!r}" for k, v in args.items())
    if kind == "StableDiffusionPipeline":  # the student learned the teacher's guided prediction
        return '"a photo of a cat", num_inference_steps=50, guidance_scale=1.0'
    return None


def _how_to_load(kind: str, location: str, run: Run, student_module: str, folder: Path, at: Any) -> str:
    from dkdm_zoo.export.stock import STOCK_PIPELINES

    spec = run.manifest.teacher_spec
    if kind in STOCK_PIPELINES:
        return (
            f'```python\nfrom diffusers import {kind}\n\npipe = {kind}.from_pretrained("{location}")\n'
            f"image = pipe({_call(kind, folder, run, at)}).images[0]\n```"
        )
    if kind == "DDPMPipeline":
        return (
            "```python\nfrom diffusers import DDPMPipeline\n\n"
            f'pipe = DDPMPipeline.from_pretrained("{location}")\n'
            "images = pipe(batch_size=4, num_inference_steps=50).images\n```"
        )
    if kind == "StableDiffusionPipeline":
        return (
            "```python\nfrom diffusers import StableDiffusionPipeline\n\n"
            f'pipe = StableDiffusionPipeline.from_pretrained("{location}")\n'
            "# the student learned the teacher's guided prediction: no extra guidance\n"
            'image = pipe("a photo of a cat", num_inference_steps=50, guidance_scale=1.0).images[0]\n```'
        )
    if kind == "DiTPipeline":
        return (
            "```python\nfrom diffusers import DiTPipeline\n\n"
            f'pipe = DiTPipeline.from_pretrained("{location}")\n'
            "images = pipe(class_labels=[0, 1, 2, 3], num_inference_steps=50, guidance_scale=1.0).images\n```"
        )
    if spec.conditioning == "text":
        call = 'pipe(prompt="a photo of a cat"'
    elif spec.conditioning == "class":
        call = "pipe(class_labels=[0, 1, 2, 3]"
    else:
        call = "pipe(batch_size=4"
    steps = "" if run.manifest.one_step else ", num_inference_steps=50"
    labels = f"  # labels 0..{spec.num_classes - 1}" if spec.conditioning == "class" else ""
    plugin = student_module.split(".")[0]
    needs = "" if plugin in ("dkdm_zoo", "diffusers") else f" and the plugin that provides `{plugin}`"
    return (
        f"Needs `pip install dkdm-zoo`{needs}; importing `dkdm_zoo.pipelines` registers the pipeline class "
        "with diffusers (diffusers itself imports no code a model folder names).\n\n"
        "```python\nimport dkdm_zoo.pipelines  # noqa: F401\nfrom diffusers import DiffusionPipeline\n\n"
        f'pipe = DiffusionPipeline.from_pretrained("{location}")\n'
        f"images = {call}{steps}).images{labels}\n```"
    )


def method_summary(registry: Any, name: str) -> str:
    """The method as its registration describes it (the registry is the one list of methods)."""
    try:
        summary = registry.get("methods", name).summary
    except UnknownNameError:  # a plugin method that is not installed here
        return f"`{name}`"
    return f"`{name}`: {summary}" if summary else f"`{name}`"


def load_location(folder: Path, location: str | Path | None, repo_id: str | None) -> str:
    """What the card's snippet loads: the Hub repository, else the folder relative to the working
    folder (an absolute path would name this machine), else the folder's own name."""
    if repo_id:
        return repo_id
    target = Path(location or folder).resolve()
    try:
        return target.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return target.name


def write_model_card(
    run: Run,
    folder: Path,
    registry: Any,
    *,
    location: str | Path | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write ``folder/README.md`` (and copy the run's sample grid beside it when there is one).

    The card shows how to load the pipeline from ``repo_id`` (a Hub card), else from ``location``
    (default: ``folder``); ``base_model`` is set only when the teacher is a Hub id."""
    from huggingface_hub import ModelCard, ModelCardData

    manifest = run.manifest
    spec = manifest.teacher_spec
    folder = Path(folder)
    adapters = read_info(folder)  # an adapters-only LoRA export: no pipeline of its own
    index = adapters or json.loads((folder / "model_index.json").read_text())
    kind = index.get("_class_name", "DiffusionPipeline")
    base = base_model(run)
    tags = ["dkdm-zoo", manifest.method, "diffusion-distillation", *(["lora"] if adapters else [])]
    # a stock pipeline holds the generator's backbone only: its K and timesteps are the run's student's
    holder = folder if (folder / "student").is_dir() else run.student_dir.parent
    calls, at = generator_steps(holder) if manifest.one_step else (None, None)
    if manifest.one_step:
        tags.append("one-step" if calls == 1 else f"{calls}-step")
    data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="text-to-image" if spec.conditioning == "text" else "unconditional-image-generation",
        base_model=base if is_hub_id(base) else None,
        tags=tags,
        license=teacher_license(run),
    )
    teacher_options = dict(manifest.teacher_options)
    if "path" in teacher_options:  # named as base_model names it: no path of this machine
        teacher_options["path"] = base
    train = _train_settings(run)
    facts = _training(run)
    params = _student_parameters(run)
    what = {
        "none": "unconditional",
        "class": f"class-conditional ({spec.num_classes} classes)",
        "text": "text-conditional",
    }
    student = f"`{manifest.student}` (preset `{manifest.student_preset}`"
    student += f", {params:,} parameters)" if params else ")"
    lines = [
        f"# {run.name}: a `{manifest.student}` student distilled from `{base}`",
        "",
        f"A {_what(calls)} trained with dkdm-zoo by {method_summary(registry, manifest.method)}.",
        "",
        "| | |",
        "|---|---|",
        f"| teacher | `{manifest.teacher}` {_options(teacher_options)} |",
        f"| teacher space | {spec.space}, {'x'.join(map(str, spec.sample_shape))} samples, "
        f"{'x'.join(map(str, spec.image_shape))} images, {what[spec.conditioning]} |",
        f"| schedule | T = {spec.num_train_timesteps} {_options(spec.schedule)}, the teacher predicts "
        f"{spec.prediction_type}; {_student_predicts(manifest.one_step, spec)} |",
        f"| student | {student}, class `{manifest.student_class}` {_options(manifest.student_options)} |",
        f"| method | `{manifest.method}` {_options(manifest.method_options)} |",
        f"| training | {_training_line(train, facts)} |",
        f"| teacher forwards | {_count(facts.get('teacher_forwards'))} |",
        f"| wall time (set-up, pool initialisation and training) | {_duration(facts.get('wall_s'))} |",
        f"| pipeline | {_pipeline_cell(kind, adapters is not None)} |",
    ]
    if calls is not None:
        lines.append(f"| network calls per image | {calls} (timesteps {at}) |")
    lines.append("")
    rows = _metrics_rows(run)
    if rows:
        lines += [
            "## Quality",
            "",
            "Feature-space metrics of dkdm-zoo's digit evaluator (`dkdm_zoo.evaluation`); lower FD is better.",
            "",
            "| model | report | NFE/image | FD | precision | recall | accuracy |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    if run.samples_path.is_file():
        shutil.copyfile(run.samples_path, folder / GRID_NAME)
        lines += ["## Samples", "", f"![samples of the student]({GRID_NAME})", ""]
    location = load_location(folder, location, repo_id)
    module = manifest.student_class.partition(":")[0]
    lines += ["## Use", ""]
    if adapters is None:
        lines += [_how_to_load(kind, location, run, module, folder, at), ""]
    lines += lora_card_lines(
        folder, kind, base_model(run), location, _call(kind, folder, run, at), is_lora_run(run)
    )
    lines += [
        "With dkdm-zoo: `dkdm-zoo sample RUN`, `dkdm-zoo eval RUN --against teacher`; the run folder can also be "
        "the teacher of another distillation (`--teacher run@RUN`).",
        "",
    ]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
    path = folder / "README.md"
    card.save(path)
    return path


def generator_steps(folder: Path) -> tuple[int, list[Any]]:
    """K and the K timesteps of the generator a pipeline folder holds (its student/config.json)."""
    config = json.loads((folder / "student" / "config.json").read_text())
    times = config.get("step_timesteps") or [config.get("timestep")]
    return len(times), times


def _pipeline_cell(kind: str, adapters_only: bool) -> str:
    if not adapters_only:
        return f"`{kind}`"
    return (
        f"the teacher's `{kind}` with these LoRA adapters (`dkdm-zoo export RUN OUT --merge`: merged weights)"
    )


def _what(calls: int | None) -> str:
    if calls is None:
        return "diffusion model"
    return "one-step generator" if calls == 1 else f"{calls}-step generator ({calls} network calls per image)"


def _student_predicts(one_step: bool, spec: Any) -> str:
    if one_step:
        return "the generator maps noise to a sample"
    if spec.process == "flow":
        return (
            "the student predicts the velocity on the teacher's flow-matching path (FlowMatchEuler scheduler)"
        )
    return "the student predicts eps"


def _options(options: dict[str, Any]) -> str:
    return f"(`{json.dumps(options, sort_keys=True)}`)" if options else ""


def _count(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(float(seconds), 60)
    return f"{int(minutes)} min {secs:.0f} s" if minutes else f"{secs:.1f} s"


def _training_line(train: dict[str, Any], facts: dict[str, Any]) -> str:
    parts = []
    if "steps" in facts or "steps" in train:
        parts.append(f"{facts.get('steps', train.get('steps'))} steps")
    if "batch_size" in train:
        parts.append(f"batch {train['batch_size']} per process")
    if facts.get("world_size"):
        parts.append(f"{facts['world_size']} process(es)")
    for key in ("lr", "lr_schedule", "ema_decay", "mixed_precision", "seed"):
        if key in train:
            parts.append(f"{key} {train[key]}")
    return ", ".join(parts) or "-"
