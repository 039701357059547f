"""What a model card reads of a LoRA student's export (``export.adapters`` writes it), torch-free:
the folder names, the adapters-only export's ``lora_pipeline.json``, and the card's LoRA snippet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LORA_FOLDER = "lora"  # the adapters beside a merged pipeline
INFO = "lora_pipeline.json"  # an adapters-only export's pipeline class and network config


def read_info(folder: Path) -> dict[str, Any] | None:
    """``lora_pipeline.json`` of an adapters-only export, or None for a pipeline folder."""
    path = Path(folder) / INFO
    return json.loads(path.read_text()) if path.is_file() else None


def is_lora_run(run: Any) -> bool:
    """Whether the run's student is a LoRA (its student/config.json, or its generator's backbone's)."""
    path = run.student_dir / "config.json"
    if not path.is_file():
        return False
    config = json.loads(path.read_text())
    return bool(config.get("lora") or (config.get("backbone_config") or {}).get("lora"))


def lora_card_lines(
    folder: Path, kind: str, teacher: str, location: str, call: str | None, lora_run: bool
) -> list[str]:
    """The card's LoRA part: the snippet that loads the adapters on the teacher's own pipeline (an
    adapters-only export, or the ``lora/`` beside a merged one), or why the weights are merged."""
    folder = Path(folder)
    alone = read_info(folder) is not None
    if not alone and not (folder / LORA_FOLDER).is_dir():
        if not lora_run:
            return []
        return [
            f"The student is a LoRA of its teacher; `{kind}` loads no LoRA, so the weights above are its "
            "adapters merged into the teacher's network.",
            "",
        ]
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["_class_name"]
    where = f'"{location}"' + ("" if alone else f', subfolder="{LORA_FOLDER}"')
    code = (
        f"```python\nfrom diffusers import {kind}, {scheduler}\n\n"
        f'pipe = {kind}.from_pretrained("{teacher}")  # the teacher\n'
        f"pipe.load_lora_weights({where})\n"
        f'pipe.scheduler = {scheduler}.from_pretrained("{location}", subfolder="scheduler")\n'
        + (f"image = pipe({call}).images[0]\n" if call else "")
        + "```"
    )
    if alone:
        head = (
            "The student is a LoRA of its teacher, exported as a diffusers LoRA: load the teacher's own "
            "pipeline, these adapters and the scheduler with which it samples as dkdm-zoo samples:"
        )
    else:
        head = (
            "The student is a LoRA of its teacher: the weights above are merged; the adapters alone "
            f"(`{LORA_FOLDER}/`) load on the teacher's own pipeline (with the scheduler above, it "
            "samples the same images):"
        )
    return [head, "", code, ""]
