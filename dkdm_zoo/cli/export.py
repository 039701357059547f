"""`dkdm-zoo export RUN [DIR]`: (re)write a run's diffusers pipeline and model card, optionally push it.

For runs made before pipelines and cards existed, or to write the pipeline elsewhere. A LoRA student is
written as a diffusers LoRA for its teacher's pipeline, ``--merge`` adds the merged full pipeline.
Torch-free at import: the body imports the export code.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from dkdm_zoo.errors import UserError


def export(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="a finished run folder (has run.json and student/)")],
    out: Annotated[
        Path | None, typer.Argument(help="the pipeline folder to write (default: RUN/pipeline)")
    ] = None,
    push_to_hub: Annotated[
        str | None,
        typer.Option(
            "--push-to-hub", help="then upload the folder to this Hugging Face Hub repository (org/name)"
        ),
    ] = None,
    private: Annotated[bool, typer.Option(help="with --push-to-hub: create the repository private")] = False,
    merge: Annotated[
        bool,
        typer.Option(
            "--merge",
            help="a LoRA student: also write the full pipeline with the adapters merged (default: the "
            "adapters, their scheduler and the card only, for the teacher's own pipeline)",
        ),
    ] = False,
) -> None:
    """Write the run's student as a diffusers pipeline with a Hub model card (README.md)."""
    from dkdm_zoo.cli.common import announce, console, registry_of
    from dkdm_zoo.export.card import is_hub_id, write_model_card
    from dkdm_zoo.export.run import export_run
    from dkdm_zoo.runs import Run
    from dkdm_zoo.runs.writer import RunLock

    if push_to_hub is not None and not is_hub_id(push_to_hub):
        raise UserError(
            f"--push-to-hub {push_to_hub!r}: expected a Hub repository id like your-name/my-student"
        )
    if not Run.is_run(run_dir):
        raise UserError(
            f"{run_dir} is not a dkdm-zoo run directory (no run.json): pass the output folder of a run"
        )
    run = Run(run_dir)
    registry = registry_of(ctx)
    # writing RUN/pipeline: the run's one writer while it does (a distill --resume may be finishing it)
    with RunLock(run.path) if out is None else contextlib.nullcontext():
        exported = export_run(run, registry, folder=out, merge=merge)
    folder = exported.path
    if exported.note:
        announce(exported.note)
    if exported.adapters_only:
        console.print(
            f"wrote {folder}: a diffusers LoRA for the teacher's {exported.kind} with its model card "
            "(README.md); --merge also writes the merged pipeline"
        )
    else:
        console.print(f"wrote {folder}: a diffusers {exported.kind} with its model card (README.md)")
    if push_to_hub is not None:
        # the card as the Hub shows it: loads by repo id
        write_model_card(run, folder, registry, repo_id=push_to_hub)
        url = _upload(folder, push_to_hub, private)
        console.print(f"pushed {folder} to {url}")


def _upload(folder: Path, repo_id: str, private: bool) -> str:
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, exist_ok=True, private=private)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="dkdm-zoo export")
    except Exception as exc:  # noqa: BLE001 - network, auth and offline failures: all one line, the folder stays
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"--push-to-hub {repo_id}: the upload failed ({text}); the pipeline is in {folder}: log in with "
            f"`hf auth login`, check the network (and HF_HUB_OFFLINE), then retry or run `hf upload {repo_id} {folder}`"
        ) from None
    return str(commit.repo_url)
