"""Optional Inception FID for real-image data, through torchmetrics' FrechetInceptionDistance.

torchmetrics uses torch-fidelity's FID Inception network (TensorFlow's 2015-12-05 Inception weights,
the ones every published FID uses). It would download them; here the weights are always a local file,
given as `weights_path` or by the environment variable DKDM_ZOO_INCEPTION_WEIGHTS:

- `*.safetensors` (preferred): loaded with safetensors, no unpickling;
- torch-fidelity's own `weights-inception-2015-12-05-6726825d.pth`: a pickle, read only with
  `allow_pickle=True` (and then with torch.load(weights_only=True)); `convert_inception_weights`
  turns it into safetensors once (`python tools/convert_inception_weights.py IN.pth OUT.safetensors`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from torch import Tensor

from dkdm_zoo.errors import UserError

WEIGHTS_ENV = "DKDM_ZOO_INCEPTION_WEIGHTS"
TORCH_FIDELITY_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
INSTALL_HINT = "pip install 'torchmetrics[image]>=1.4' (it brings torch-fidelity)"
HOW_TO_GET_WEIGHTS = (
    f"download {TORCH_FIDELITY_WEIGHTS} from torch-fidelity's GitHub release v0.2.0, convert it with "
    f"`python tools/convert_inception_weights.py {TORCH_FIDELITY_WEIGHTS} inception-fid.safetensors` "
    f"and set {WEIGHTS_ENV}=/path/to/inception-fid.safetensors (or pass weights_path)"
)


def _fid_classes():
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
    except ImportError as exc:
        raise UserError(f"Inception FID needs torchmetrics and torch-fidelity: {INSTALL_HINT}") from exc
    if not _TORCH_FIDELITY_AVAILABLE:
        raise UserError(f"Inception FID needs torch-fidelity: {INSTALL_HINT}")
    return FrechetInceptionDistance, NoTrainInceptionV3


def resolve_weights_path(weights_path: str | Path | None = None) -> Path:
    """The local Inception weights file: the argument, else $DKDM_ZOO_INCEPTION_WEIGHTS."""
    raw = weights_path if weights_path is not None else os.environ.get(WEIGHTS_ENV)
    if not raw:
        raise UserError(f"Inception FID needs local weights and never downloads them: {HOW_TO_GET_WEIGHTS}")
    path = Path(raw).expanduser()
    if not path.is_file():
        raise UserError(f"Inception weights file {str(path)!r} does not exist: {HOW_TO_GET_WEIGHTS}")
    return path


def load_inception_state_dict(path: Path, allow_pickle: bool = False) -> dict[str, Tensor]:
    """Tensors of a .safetensors file, or of a pickled .pth only when `allow_pickle` opts in."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if not allow_pickle:
        raise UserError(
            f"{str(path)!r} is not a .safetensors file: reading a pickle needs allow_pickle=True, or convert it once "
            f"with `python tools/convert_inception_weights.py {path} inception-fid.safetensors`"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{str(path)!r} does not hold a state dict of tensors")
    return state


def convert_inception_weights(src: str | Path, dst: str | Path) -> Path:
    """torch-fidelity's pickled Inception weights -> safetensors (read with torch.load(weights_only=True))."""
    from safetensors.torch import save_file

    state = load_inception_state_dict(Path(src), allow_pickle=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst))
    return Path(dst)


def to_uint8_rgb(images: Tensor) -> Tensor:
    """(N, 1 or 3, H, W) in [-1, 1] -> (N, 3, H, W) uint8, as the FID network expects."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise UserError(
            f"Inception FID expects images (N, 1 or 3, H, W) in [-1, 1], got shape {tuple(images.shape)}"
        )
    images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class InceptionFID:
    """Accumulates real and generated images; `compute()` returns their Inception FID (2048-d pool features)."""

    def __init__(
        self, weights_path: str | Path | None = None, allow_pickle: bool = False, device: str = "cpu"
    ):
        FrechetInceptionDistance, NoTrainInceptionV3 = _fid_classes()
        path = resolve_weights_path(weights_path)
        state = load_inception_state_dict(path, allow_pickle=allow_pickle)
        # torch-fidelity only takes its weights from a URL or torch.load(); hand it an in-memory
        # serialisation of the tensors we loaded safely above.
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        try:
            network = NoTrainInceptionV3(
                name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=buffer
            )
        except RuntimeError as exc:  # load_state_dict: missing or mismatched keys
            raise UserError(
                f"{str(path)!r} is not torch-fidelity's FID Inception weights: {HOW_TO_GET_WEIGHTS}"
            ) from exc
        network.num_features = 2048  # spares torchmetrics a dummy forward pass to find it
        self.metric = FrechetInceptionDistance(feature=network, normalize=False).to(device)
        self.device = device

    @torch.no_grad()
    def update(self, images: Tensor, real: bool, batch_size: int = 64) -> None:
        for i in range(0, len(images), batch_size):
            self.metric.update(to_uint8_rgb(images[i : i + batch_size]).to(self.device), real=real)

    def compute(self) -> float:
        return float(self.metric.compute())

    def reset(self) -> None:
        self.metric.reset()


def inception_fid(
    samples: Tensor,
    reference: Tensor,
    weights_path: str | Path | None = None,
    allow_pickle: bool = False,
    device: str = "cpu",
) -> float:
    """Inception FID between two image sets in [-1, 1] (reference = real images)."""
    if len(samples) < 2 or len(reference) < 2:
        raise UserError("Inception FID needs at least 2 images in each set")
    fid = InceptionFID(weights_path, allow_pickle=allow_pickle, device=device)
    fid.update(reference, real=True)
    fid.update(samples, real=False)
    return fid.compute()
