"""`latent-sd`: a Stable Diffusion-style latent teacher (UNet2DConditionModel + VAE + CLIP text).

``transformers`` is an optional dependency (``pip install 'dkdm-zoo[sd]'``): it is imported only
here, and this module is imported only when the teacher is created. Conditions are prompts from
a list or a text file (one per line), encoded by the CLIP text encoder; classifier-free guidance
uses the embedding of the empty prompt "" as the null condition, as StableDiffusionPipeline does.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dkdm_zoo.errors import UserError
from dkdm_zoo.registry.options import takes_options
from dkdm_zoo.sampling.latents import decode_latents
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.teachers.base import Condition, PipelineComponents, Teacher
from dkdm_zoo.teachers.dit import vae_downsampling
from dkdm_zoo.teachers.loading import (
    HubTeacherOptions,
    find_model_folder,
    load_pretrained,
    load_scheduler_config,
    parse_dtype,
    require_component,
    resolve_source,
    schedule_spec_fields,
)
from dkdm_zoo.teachers.unread import cast

ENCODE_BATCH = 64  # prompts per text-encoder call
ENCODE_CACHE = 1024  # prompt embeddings kept on the device (about 120 MB for SD at 77 x 768 in bf16)
NULL_PROMPT = -1  # the reference of the empty prompt "", the null condition of guidance


class PromptFile(Sequence[str]):
    """The prompts of a text file (one per line, blank lines skipped), read on demand.

    Only the line offsets are held in memory (8 bytes a prompt), so a file of millions of prompts
    costs tens of MB; a prompt is read from the file when a batch needs it.
    """

    def __init__(self, path: Path):
        self.path = path
        offsets, position = [], 0
        with path.open("rb") as fh:
            for line in fh:
                if line.decode("utf-8").strip():  # fails here, not mid-run, on a file that is not text
                    offsets.append(position)
                position += len(line)
        self.offsets = np.asarray(offsets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        with self.path.open("rb") as fh:
            fh.seek(int(self.offsets[index]))
            return fh.readline().decode("utf-8").strip()


def read_prompts(prompts: str | os.PathLike[str] | Sequence[str] | None) -> Sequence[str] | None:
    """A list of prompts, or a text file with one prompt per line (blank lines skipped)."""
    if prompts is None:
        return None
    if isinstance(prompts, str | os.PathLike):
        path = Path(prompts).expanduser()
        if path.is_dir():
            raise UserError(
                f"prompt file {path} is a folder: pass a text file with one prompt per line, or a list"
            )
        if not path.is_file():
            raise UserError(
                f"prompt file {path} does not exist: pass a text file with one prompt per line, or a list"
            )
        try:
            items = PromptFile(path)
        except UnicodeDecodeError:
            raise UserError(f"prompt file {path} is not UTF-8 text: write one prompt per line") from None
        if not len(items):
            raise UserError(f"prompt file {path} has no prompts: write one prompt per line")
        return items
    items = [str(p) for p in prompts]
    if not items:
        raise UserError("the prompt list is empty: pass at least one prompt")
    return items


def spec_from_sd(
    unet: nn.Module,
    vae: nn.Module,
    text_encoder: nn.Module,
    text_seq_len: int,
    scheduler_config: dict[str, Any],
) -> TeacherSpec:
    cfg = unet.config
    channels = cfg.in_channels
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    embed_dim = int(text_encoder.config.hidden_size)
    if cfg.cross_attention_dim != embed_dim:
        raise UserError(
            f"latent-sd: the UNet attends to {cfg.cross_attention_dim}-dim text but the text encoder gives {embed_dim}: "
            "use a UNet and text encoder from the same pipeline"
        )
    factor = vae_downsampling(vae)
    return TeacherSpec(
        sample_shape=(channels, size, size),
        space="latent",
        **schedule_spec_fields(
            scheduler_config,
            learned=cfg.out_channels == 2 * channels,
            where="latent-sd",
            built_as="DDPMScheduler",
        ),
        conditioning="text",
        text_embed_dim=embed_dim,
        text_seq_len=int(text_seq_len),
        image_shape=(vae.config.out_channels, size * factor, size * factor),
        family="latent-sd",
    )


class LatentSDTeacher(Teacher):
    """UNet2DConditionModel on VAE latents, conditioned on CLIP text embeddings."""

    student_calling = "diffusers"  # its network takes the student contract's keywords as they are

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        tokenizer: Any,
        scheduler_config: dict[str, Any],
        *,
        prompts: str | os.PathLike[str] | Sequence[str] | None = None,
        guidance_scale: float | None = 7.5,
    ):
        spec = spec_from_sd(unet, vae, text_encoder, tokenizer.model_max_length, dict(scheduler_config))
        super().__init__(spec, guidance_scale=guidance_scale)
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.prompts = read_prompts(prompts)
        self._null: dict[str, Tensor] | None = None
        self._cache: OrderedDict[int, dict[str, Tensor]] = OrderedDict()  # prompt index -> parts (device)
        self.to("cpu")

    def modules(self) -> list[nn.Module]:
        return [self.unet, self.vae, self.text_encoder]

    #: the VAE's ``force_upcast`` honoured as diffusers' pipelines do (SDXL, PixArt): a float16 teacher
    #: keeps its VAE and decodes in float32
    honours_force_upcast: bool = False

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> LatentSDTeacher:
        self._null = None  # re-encode "" on the new device / dtype
        self._cache = OrderedDict()
        super().to(device, dtype)
        if self._upcast_vae:
            cast(self.vae, torch.float32)
        return self

    @property
    def _upcast_vae(self) -> bool:
        return (
            self.honours_force_upcast
            and bool(getattr(self.vae.config, "force_upcast", False))
            and self.dtype == torch.float16
        )

    @torch.no_grad()
    def text_embeddings(self, prompts: list[str]) -> Tensor:
        """CLIP last hidden states (B, text_seq_len, D), as StableDiffusionPipeline.encode_prompt."""
        chunks = []
        for start in range(0, len(prompts), ENCODE_BATCH):
            tokens = self.tokenizer(
                prompts[start : start + ENCODE_BATCH],
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            mask = (
                tokens.attention_mask.to(self.device)
                if getattr(self.text_encoder.config, "use_attention_mask", False)
                else None
            )
            chunks.append(self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask)[0])
        return torch.cat(chunks)

    # -- what a text family encodes per prompt, and the Condition it builds from a batch of them --------
    # A family with more than one tensor per prompt (SDXL's pooled projection, PixArt's attention mask)
    # overrides these two; the cache, the null prompt and the references stay here.
    def encode_parts(self, prompts: list[str]) -> dict[str, Tensor]:
        """Per-prompt tensors (first dimension: the prompt) a Condition is built from."""
        return {"text": self.text_embeddings(prompts)}

    def condition_from_parts(self, parts: dict[str, Tensor], prompts: list[str] | None = None) -> Condition:
        return Condition(text_embeds=parts["text"], prompts=prompts)

    def null_parts(self) -> dict[str, Tensor]:
        """The parts of the null condition of guidance: the empty prompt "", as the pipeline encodes it."""
        return self.encode_parts([""])

    def encode_prompts(self, prompts: list[str]) -> Condition:
        return self.condition_from_parts(self.encode_parts(list(prompts)), list(prompts))

    def _require_prompts(self) -> Sequence[str]:
        if not self.prompts:
            family = self.spec.family or "latent-sd"
            raise UserError(
                f"{family} needs prompts to draw conditions: pass --set 'teacher.prompts=[\"a photo of a cat\"]' "
                "or --set teacher.prompts=prompts.txt (one prompt per line)"
            )
        return self.prompts

    def sample_conditions(self, n: int, generator: torch.Generator | None = None) -> Condition:
        prompts = self._require_prompts()
        device = generator.device if generator is not None else "cpu"
        index = torch.randint(0, len(prompts), (n,), generator=generator, device=device)
        return self.encode_prompts([prompts[i] for i in index.tolist()])

    def draw_refs(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, len(self._require_prompts()), n, dtype=np.int64)

    def null_ref(self) -> int:
        return NULL_PROMPT

    def conditions_from_refs(self, refs: np.ndarray | None) -> Condition | None:
        """Conditions of the referenced prompts (``NULL_PROMPT``: the null condition), from a small
        cache of recent encodings; only the prompts not cached go through the text encoder(s)."""
        if refs is None:
            return None
        missing = sorted({int(r) for r in refs} - self._cache.keys())
        texts = [r for r in missing if r != NULL_PROMPT]
        if texts:
            prompts = self._require_prompts()
            parts = self.encode_parts([prompts[r] for r in texts])
            for i, ref in enumerate(texts):
                self._cache[ref] = {k: v[i] for k, v in parts.items()}
        if NULL_PROMPT in missing:
            self._cache[NULL_PROMPT] = {k: v[0] for k, v in self._null_parts().items()}
        for ref in refs.tolist():  # host ints: most recently used last
            self._cache.move_to_end(int(ref))
        while len(self._cache) > ENCODE_CACHE:
            self._cache.popitem(last=False)
        rows = [self._cache[int(r)] for r in refs.tolist()]
        return self.condition_from_parts({k: torch.stack([row[k] for row in rows]) for k in rows[0]})

    def _null_parts(self) -> dict[str, Tensor]:
        if self._null is None:
            self._null = self.null_parts()
        return self._null

    def condition_cache_bytes(self) -> int:
        """Device memory the encoded-prompt cache reaches: ``ENCODE_CACHE`` prompts (fewer when the
        list is shorter) and the null condition, each as the encoders give it (the plan counts it)."""
        per_prompt = sum(v[0].numel() * v.element_size() for v in self._null_parts().values())
        return per_prompt * (min(ENCODE_CACHE, len(self.prompts or [])) + 1)

    def null_condition(self, n: int) -> Condition:
        parts = {k: v.expand(n, *v.shape[1:]) for k, v in self._null_parts().items()}
        return self.condition_from_parts(parts, [""] * n)

    def denoiser(self) -> nn.Module:
        return self.unet

    def with_denoiser(self, module: nn.Module) -> LatentSDTeacher:
        return self._view(unet=module)

    def model_output(self, x_t: Tensor, t: Tensor, cond: Condition | None) -> Tensor:
        if cond is None or cond.text_embeds is None:
            cond = self.null_condition(x_t.shape[0])
        embeds = cond.text_embeds.to(x_t.device, self.dtype)
        return self.unet(x_t, t.to(x_t.device), encoder_hidden_states=embeds).sample

    @torch.no_grad()
    def decode(self, samples: Tensor) -> Tensor:
        """Latents -> images in [-1, 1] with the VAE's scaling factor."""
        return decode_latents(self.vae, samples, dtype=torch.float32 if self._upcast_vae else self.dtype)

    def pipeline_components(self) -> PipelineComponents:
        return PipelineComponents(vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer)


@dataclass(frozen=True)
class LatentSDOptions(HubTeacherOptions):
    prompts: str | os.PathLike[str] | Sequence[str] | None = None  # a list, or a file with one per line
    guidance_scale: float | None = 7.5  # StableDiffusionPipeline's default


@takes_options(LatentSDOptions)
def load(options: LatentSDOptions) -> LatentSDTeacher:
    """A teacher from a StableDiffusionPipeline folder, hub id or cached snapshot (unet/, vae/,
    text_encoder/, tokenizer/, scheduler/); the pipeline's other entries (safety_checker,
    feature_extractor, image_encoder) are never read."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    o = options
    source = resolve_source(o.path, o.local_files_only)
    folder = find_model_folder(source, ("unet",))
    if folder is None:
        raise UserError(
            f"{source} is a single model folder: latent-sd needs a Stable Diffusion pipeline folder "
            "(model_index.json with unet/, vae/, text_encoder/, tokenizer/, scheduler/)"
        )
    for part in ("vae", "text_encoder"):
        require_component(source, part, "latent-sd")
    # SD v1.x repositories ship vocab.json + merges.txt; tokenizers saved by recent transformers, tokenizer.json
    tokenizer_files = [n for n in ("vocab.json", "merges.txt") if source.fetch(n, "tokenizer") is None]
    if tokenizer_files and source.fetch("tokenizer.json", "tokenizer") is None:
        raise UserError(
            f"{source} has no tokenizer/{tokenizer_files[0]} or tokenizer/tokenizer.json (searched "
            f"{source.where('tokenizer')}): latent-sd needs the pipeline's CLIP tokenizer; the download "
            "may be incomplete (fetch it again)"
        )
    scheduler_config = load_scheduler_config(source, folder)
    weights = {"allow_pickle": o.allow_pickle, "dtype": o.dtype}
    unet = load_pretrained(UNet2DConditionModel, source, folder, **weights)
    vae = load_pretrained(AutoencoderKL, source, "vae", **weights)
    text_encoder = load_pretrained(CLIPTextModel, source, "text_encoder", dtype_kwarg="dtype", **weights)
    tokenizer = load_pretrained(CLIPTokenizer, source, "tokenizer", weights=False)
    teacher = LatentSDTeacher(
        unet,
        vae,
        text_encoder,
        tokenizer,
        scheduler_config,
        prompts=o.prompts,
        guidance_scale=o.guidance_scale,
    )
    return teacher.to("cpu", parse_dtype(o.dtype))
