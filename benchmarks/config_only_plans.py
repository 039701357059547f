"""The full-size plans of the large-teacher recipes, from their configs alone.

`distill --dry-run` never opens a teacher's weights (``dkdm_zoo.teachers.unread``: every network is
built from its config as fake tensors), so the plan of a 12B FLUX or 8B SD3.5-large recipe needs
only the folder's configs and tokenizers. This benchmark writes such folders with the real repos'
configs (``dkdm_zoo.testing.flow_hub_configs``, ``sdxl_hub_configs``; the pipelines are built on the
meta device and their configs saved) and an EMPTY file where each weight file is (the dry run checks
that weights are there, as it always does, and never reads them), then runs each recipe's dry run
in a fresh process: wall time, peak RSS, the plan's memory per process and its verdict.

    FLUX.1-dev      12B transformer + T5-XXL 4.7B + CLIP-L + VAE
    SD3.5-large     8.1B transformer (38 MMDiT blocks of width 2432) + T5-XXL + CLIP-L + CLIP-G + VAE
    SDXL base       2.6B UNet + CLIP-L + OpenCLIP-bigG + VAE (RESULTS 7b read the weights: 494 s)

Run: nice python -m benchmarks.config_only_plans --work /tmp/dkdm-config-only
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from benchmarks.common import write_result
from benchmarks.real_teachers import run

FLUX_DEV = "black-forest-labs/FLUX.1-dev"
SD35_LARGE = "stabilityai/stable-diffusion-3.5-large"
SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"

#: repo -> (recipe, processes, accelerator) the plan is asked for
PLANS: dict[str, list[tuple[str, int, str]]] = {
    FLUX_DEV: [("flux-dev-to-one-step-sid", 1, "H100"), ("flux-dev-to-one-step-sid", 8, "H100")],
    SD35_LARGE: [("sd35-large-to-one-step-sid", 1, "H100"), ("sd35-large-to-one-step-sid", 8, "H100")],
    SDXL_BASE: [("sdxl-to-one-step-sid", 1, "H100")],
}


def sd35_large_transformer() -> dict[str, Any]:
    """SD3.5-large's MMDiT: SD3.5-medium's config with 38 blocks of 38 heads x 64 (width 2432), the
    caption projection at that width, a 192-patch position table and no dual-attention blocks."""
    from dkdm_zoo.testing.flow_hub_configs import sd35_medium_transformer

    return {
        **sd35_medium_transformer("full"),
        "num_layers": 38,
        "num_attention_heads": 38,
        "caption_projection_dim": 2432,
        "pos_embed_max_size": 192,
        "dual_attention_layers": [],
    }


def pipeline_on_meta(repo: str) -> Any:
    from accelerate import init_empty_weights

    from dkdm_zoo.testing import flow_hub_fixtures

    with init_empty_weights():
        if repo == FLUX_DEV:
            return flow_hub_fixtures.flux_pipeline("full", dev=True)
        if repo == SD35_LARGE:
            from diffusers import SD3Transformer2DModel

            pipe = flow_hub_fixtures.sd35_medium_pipeline("full")
            pipe.register_modules(transformer=SD3Transformer2DModel(**sd35_large_transformer()))
            return pipe
    raise ValueError(f"no config-only builder for {repo}")


def write_config_only(repo: str, folder: Path) -> dict[str, int]:
    """``repo``'s pipeline folder: configs, tokenizers, the scheduler, an empty file per weight file."""
    from diffusers import ModelMixin
    from transformers import PreTrainedModel

    pipe = pipeline_on_meta(repo)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_config(folder)  # model_index.json
    counts: dict[str, int] = {}
    for name, component in pipe.components.items():
        if component is None:
            continue
        target = folder / name
        if isinstance(component, ModelMixin):
            component.save_config(target)
            (target / "diffusion_pytorch_model.safetensors").write_bytes(b"")
        elif isinstance(component, PreTrainedModel):
            component.config.save_pretrained(target)
            (target / "model.safetensors").write_bytes(b"")
        else:  # tokenizers and the scheduler are small: written whole
            component.save_pretrained(target)
            continue
        counts[name] = sum(p.numel() for p in component.parameters())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/dkdm-config-only"))
    parser.add_argument("--only", nargs="*", default=[FLUX_DEV, SD35_LARGE])
    parser.add_argument(
        "--sdxl-folder", type=Path, help="a full-size SDXL folder (weights read before; here unread)"
    )
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    records: list[dict[str, Any]] = []
    folders: dict[str, Path] = {}
    for repo in args.only:
        folder = work / repo.replace("/", "--")
        folders[repo] = folder
        records.append({"repo": repo, "parameters": write_config_only(repo, folder)})
        print(json.dumps(records[-1]), flush=True)
    if args.sdxl_folder is not None:
        folders[SDXL_BASE] = args.sdxl_folder
    for repo, folder in folders.items():
        for recipe, processes, gpu in PLANS[repo]:
            argv = ["distill", "--recipe", recipe, "--set", f"teacher.path={folder}", "--dry-run", "--json"]
            argv += ["--processes", str(processes), "--gpu", gpu, "--out", str(work / "runs" / recipe)]
            record = run(argv, env, work)
            plan = _plan_from_log(work / "log.txt")
            if plan is not None:
                record["plan"] = {
                    key: plan[key]
                    for key in ("parameters", "memory_per_process_bytes", "memory_phases_bytes", "verdict")
                }
                record["plan"]["memory_per_process_gib"] = {
                    name: round(p["peak"] / 2**30, 1) for name, p in plan["memory_per_process"].items()
                }
            records.append({"repo": repo, "recipe": recipe, "processes": processes, "gpu": gpu, **record})
            print(json.dumps(records[-1]), flush=True)
    print(write_result("config_only_plans", {"runs": records}))


def _plan_from_log(log: Path) -> dict[str, Any] | None:
    """The last JSON object the dry run printed (its stdout goes to the log)."""
    text = log.read_text()
    start = text.rfind("\n{")
    try:
        return json.loads(text[start + 1 :].split("\n}\n", 1)[0] + "\n}")
    except ValueError:
        return None


if __name__ == "__main__":
    main()
