"""Narrow random-weight copies of SD3.5-medium, FLUX.1-schnell, FLUX.1-dev and SANA-1600M (written by
the real pipeline classes, built once per session) and a HF cache of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dkdm_zoo.testing.flow_hub_configs import FLUX_DEV, FLUX_SCHNELL, SANA_1600M, SD35_MEDIUM
from dkdm_zoo.testing.flow_hub_fixtures import FLOW_BUILDERS, build_flow_hub_cache

torch.set_num_threads(1)  # narrow models on a shared CPU

FAMILIES = {SD35_MEDIUM: "sd3", FLUX_SCHNELL: "flux", FLUX_DEV: "flux", SANA_1600M: "sana"}
#: what every text teacher here takes: prompts and a short text (T5 / Gemma tokens)
TEACHER_SETTINGS = ['--set=teacher.prompts=["a cat sitting on a chair", "a red fox in the snow"]']
TEACHER_SETTINGS += ["--set=teacher.max_sequence_length=8"]
#: per repo: the image size a narrow FLUX samples (1024 px by default, 8x8 latents here)
REPO_SETTINGS = {FLUX_SCHNELL: ["--set=teacher.resolution=64"], FLUX_DEV: ["--set=teacher.resolution=64"]}
LOAD_OPTIONS = {FLUX_SCHNELL: {"resolution": 64}, FLUX_DEV: {"resolution": 64}}


class FlowHub:
    def __init__(self, root: Path):
        self.work = root / "folders"
        self.cache = root / "hub"
        self.snapshot = build_flow_hub_cache(self.cache, size="narrow", work_dir=self.work)
        self.folder = {repo: self.work / repo.replace("/", "--") for repo in FLOW_BUILDERS}


@pytest.fixture(scope="session")
def flow_hub(tmp_path_factory) -> FlowHub:
    return FlowHub(tmp_path_factory.mktemp("flow-layouts"))


@pytest.fixture
def offline_flow_cache(flow_hub, monkeypatch) -> Path:
    """HF_HUB_OFFLINE=1 with HF_HUB_CACHE at the fixture cache, for code in this process."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(flow_hub.cache))
    return flow_hub.cache
