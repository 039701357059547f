"""Narrow random-weight copies of real hub repositories (built once per session) and a HF cache of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dkdm_zoo.testing.hub_fixtures import BUILDERS, DDPM_CIFAR10, DIT_XL_2_256, SD_V1_5, build_hub_cache
from dkdm_zoo.testing.sdxl_fixtures import BUILDERS as MODERN_BUILDERS
from dkdm_zoo.testing.sdxl_fixtures import build_modern_hub_cache

torch.set_num_threads(1)  # narrow models on a shared CPU

FAMILIES = {DDPM_CIFAR10: "ddpm-unet", DIT_XL_2_256: "dit", SD_V1_5: "latent-sd"}
PROMPTS = '--set=teacher.prompts=["a cat sitting on a chair", "a red fox in the snow"]'


class Hub:
    """Where the narrow fixtures are: ``folder[repo]`` (a plain download) and ``cache`` (HF_HUB_CACHE)."""

    def __init__(self, root: Path):
        self.work = root / "folders"
        self.cache = root / "hub"
        self.snapshot = build_hub_cache(self.cache, size="narrow", work_dir=self.work)
        self.folder = {repo: self.work / repo.replace("/", "--") for repo in BUILDERS}


@pytest.fixture(scope="session")
def hub(tmp_path_factory) -> Hub:
    return Hub(tmp_path_factory.mktemp("real-layouts"))


@pytest.fixture
def offline_cache(hub, monkeypatch) -> Path:
    """HF_HUB_OFFLINE=1 with HF_HUB_CACHE at the fixture cache, for code in this process."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub.cache))
    return hub.cache


class Modern:
    """The SD 2.1, SDXL and PixArt-α/Σ layouts: ``folder[repo]`` and ``cache`` (HF_HUB_CACHE)."""

    def __init__(self, root):
        self.work, self.cache = root / "folders", root / "hub"
        self.snapshot = build_modern_hub_cache(self.cache, work_dir=self.work)
        self.folder = {repo: self.work / repo.replace("/", "--") for repo in MODERN_BUILDERS}


@pytest.fixture(scope="session")
def modern(tmp_path_factory) -> Modern:
    return Modern(tmp_path_factory.mktemp("modern-layouts"))


@pytest.fixture
def modern_cache(modern, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(modern.cache))
    return modern.cache
