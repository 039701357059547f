"""Optional Inception FID: the errors that tell a user what to install or provide, and (when
torchmetrics + torch-fidelity are installed) the whole path on random local weights, no download."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch

from dkdm_zoo.errors import UserError
from dkdm_zoo.evaluation.fid_inception import (
    WEIGHTS_ENV,
    InceptionFID,
    inception_fid,
    load_inception_state_dict,
    to_uint8_rgb,
)


def test_missing_library_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics.image.fid", None)
    with pytest.raises(UserError, match=r"pip install 'torchmetrics\[image\]"):
        InceptionFID("anything.safetensors")


def test_missing_weights_say_where_to_put_them(monkeypatch, tmp_path):
    pytest.importorskip("torch_fidelity")
    pytest.importorskip("torchmetrics")
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(UserError, match=WEIGHTS_ENV):
        InceptionFID()
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "absent.safetensors"))
    with pytest.raises(UserError, match="does not exist"):
        InceptionFID()


def test_pickles_need_an_explicit_opt_in(tmp_path):
    pth = tmp_path / "w.pth"
    torch.save({"a": torch.ones(2)}, pth)
    with pytest.raises(UserError, match="allow_pickle"):
        load_inception_state_dict(pth)
    assert torch.equal(load_inception_state_dict(pth, allow_pickle=True)["a"], torch.ones(2))


def test_uint8_conversion():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 2, 2)
    out = to_uint8_rgb(x)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 2, 2)
    assert out[0, 2].flatten().tolist() == [0, 128, 255, 255]


def _random_inception_weights(path):
    """Random weights with the FID network's exact keys: build it from an empty state dict (which
    its loader rejects after creating every layer) and save what it initialised."""
    from safetensors.torch import save_file
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    buffer = io.BytesIO()
    torch.save({}, buffer)
    buffer.seek(0)
    net = FeatureExtractorInceptionV3.__new__(FeatureExtractorInceptionV3)
    with pytest.raises(RuntimeError, match="Missing key"):
        FeatureExtractorInceptionV3.__init__(net, "x", ["2048"], feature_extractor_weights_path=buffer)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))


@pytest.mark.slow
def test_happy_path_on_random_local_weights(tmp_path, monkeypatch):
    pytest.importorskip("torch_fidelity")
    pytest.importorskip("torchmetrics")
    weights = tmp_path / "inception.safetensors"
    _random_inception_weights(weights)
    monkeypatch.setenv(WEIGHTS_ENV, str(weights))
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 32, 32, generator=gen) * 2 - 1
    b = torch.rand(3, 1, 32, 32, generator=gen) * 0.2 - 1  # dark grayscale: a different distribution
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # Inception at 299x299 on a shared CPU: one thread is much faster
    try:
        fid = InceptionFID()
        fid.update(a, real=True)
        fid.update(a, real=False)
        same = fid.compute()
        different = inception_fid(b, a)
    finally:
        torch.set_num_threads(threads)
    assert abs(same) < 1e-3 * different and different > 0


def test_wrong_weights_file_is_refused(tmp_path):
    pytest.importorskip("torch_fidelity")
    pytest.importorskip("torchmetrics")
    from safetensors.torch import save_file

    save_file({"fc.weight": torch.zeros(2, 2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(UserError, match="not torch-fidelity's FID Inception weights"):
        InceptionFID(tmp_path / "bad.safetensors")


def test_module_import_is_cheap():
    # Importing the evaluation package must not pull in torchmetrics (an optional dependency).
    code = "import sys, dkdm_zoo.evaluation; assert 'torchmetrics' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
