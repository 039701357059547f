"""``TeacherNetwork``: a teacher's own network (its class, config and weights) as a student.

The network is any diffusers model a teacher family evaluates (UNet2DModel, UNet2DConditionModel,
DiTTransformer2DModel, SD3/FLUX/SANA/PixArt transformers, a plugin's). The wrapper honours the
student contract (``forward(sample, timestep, class_labels=None, encoder_hidden_states=None)`` ->
eps, or the velocity on a flow path) by reading the network's own output, in its recorded
``prediction_type``, through the teacher's noise process. How the network is CALLED stays the
teacher family's business:

- bound (``bind``, done by the ``teacher`` student factory and by every loader that has the
  original teacher): through ``teacher.with_denoiser(network).model_output(x, t, condition)``, the
  family's own calling code (packing, ids, pooled projections, added_cond_kwargs), whatever it is;
- unbound, when the family declared ``student_calling = "diffusers"``: ``network(x, t, **conditions)``
  with the conditions the network's ``forward`` takes by name (``class_labels``,
  ``encoder_hidden_states`` and the condition's extras); a family that did not declare it needs the
  teacher (a one-line refusal says so).

The config (network class and config, the teacher's spec, the prediction type, what was pruned) is
all a run needs to rebuild the network without the teacher; weights are the network's own tensors.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from dkdm_zoo.errors import UserError
from dkdm_zoo.registry.classes import model_from_reference
from dkdm_zoo.spec import TeacherSpec

#: (network, x_t, t, class_labels, encoder_hidden_states, extras) -> raw network output
NetworkCall = Callable[[Any, Tensor, Tensor, Tensor | None, Tensor | None, dict[str, Tensor]], Tensor]
Calling = Literal["diffusers", "teacher"]
#: what ``forward`` returns: the student contract's target (eps / velocity), or x0 (a generator's map)
OutputType = Literal["student", "sample"]
PREDICTIONS = {"vp": ("epsilon", "v_prediction", "sample"), "flow": ("flow",)}


class _Binding:
    """The teacher family's calling code, shared (never copied) by deep copies of the student (EMA,
    fake-score copies): a deep copy of the teacher would duplicate its VAE and text encoders."""

    def __init__(self, call: NetworkCall):
        self.call = call

    def __deepcopy__(self, memo: dict[int, Any]) -> _Binding:
        return self


class TeacherNetwork(ModelMixin, ConfigMixin):
    """A teacher's network (copied, pruned or adapted) under the student contract."""

    # it calls the family's own code, which reads the condition's extras (pooled projections, time ids)
    takes_condition_extras = True

    @register_to_config
    def __init__(
        self,
        network_class: str,
        network_config: dict[str, Any],
        spec: dict[str, Any],
        prediction_type: str,
        calling: str = "teacher",
        output_type: str = "student",
        source: dict[str, Any] | None = None,
        lora: dict[str, Any] | None = None,
    ):
        super().__init__()
        where = "the teacher-network student's config (network_class)"
        self.network = model_from_reference(network_class, network_config, where=where)
        if lora:  # the adapters; the base is the teacher's own network, attached by ``attach_base``
            add_lora(self.network, lora)
            adapters_only(self)
        self.spec = TeacherSpec.from_dict(spec)
        allowed = PREDICTIONS[self.spec.process]
        if prediction_type not in allowed:
            raise UserError(
                f"student 'teacher': prediction_type {prediction_type!r} does not fit a "
                f"{self.spec.process} teacher: choose one of {', '.join(allowed)}"
            )
        if calling not in ("diffusers", "teacher") or output_type not in ("student", "sample"):
            raise UserError(
                f"student 'teacher': unknown calling {calling!r} or output_type {output_type!r} in its config"
            )
        self._binding: _Binding | None = None
        self._schedule: Any = None
        keep_labels(self.network)

    # -- calling the network ---------------------------------------------------------------------------
    def bind(self, call: NetworkCall | None) -> TeacherNetwork:
        """Call the network through a teacher family's own code (``teachers.as_student.family_call``)."""
        self._binding = None if call is None else _Binding(call)
        return self

    @property
    def bound(self) -> bool:
        return self._binding is not None

    def raw_output(
        self,
        sample: Tensor,
        timestep: Tensor | int | float,
        class_labels: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
        **extras: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """The network's own output (its prediction type) and the per-sample timesteps it was called at."""
        batch = sample.shape[0]
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.expand(batch) if t.ndim == 0 else t
        if self.spec.conditioning == "class" and class_labels is None:  # None is the null label
            class_labels = torch.full((batch,), self.spec.num_classes, dtype=torch.long, device=sample.device)
        dtype = next(self.network.parameters()).dtype
        x = sample.to(dtype)
        if self._binding is not None:
            out = self._binding.call(self.network, x, t, class_labels, encoder_hidden_states, dict(extras))
        elif self.config.calling == "diffusers":
            out = self._diffusers_call(x, t, class_labels, encoder_hidden_states, extras)
        else:
            family = self.spec.family or "this"
            raise UserError(
                f"the {family} teacher family calls its network with its own code: this student needs its "
                "teacher (load the run through dkdm-zoo, which binds it, or call student.bind(...))"
            )
        return out, t

    def _diffusers_call(
        self,
        x: Tensor,
        t: Tensor,
        class_labels: Tensor | None,
        encoder_hidden_states: Tensor | None,
        extras: dict[str, Tensor],
    ) -> Tensor:
        taken = inspect.signature(self.network.forward).parameters
        kwargs: dict[str, Tensor] = {}
        if class_labels is not None and "class_labels" in taken:
            kwargs["class_labels"] = class_labels
        if encoder_hidden_states is not None:
            kwargs["encoder_hidden_states"] = encoder_hidden_states.to(x.dtype)
        kwargs.update({k: v for k, v in extras.items() if k in taken})
        out = self.network(x, t, **kwargs)
        if isinstance(out, Tensor):  # a dkdm-zoo student (a run teacher's network)
            return out
        return out.sample if hasattr(out, "sample") else out[0]

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | int | float,
        class_labels: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
        **extras: Tensor,
    ) -> Tensor:
        out, t = self.raw_output(sample, timestep, class_labels, encoder_hidden_states, **extras)
        want = self.spec.student_prediction if self.config.output_type == "student" else "sample"
        prediction = self.config.prediction_type
        if prediction == want:
            return out
        c = self.spec.channels
        eps, x0 = self.schedule.to_eps_x0(out[:, :c].float(), sample.float(), t, prediction)
        converted = (eps if want == "epsilon" else x0).to(out.dtype)
        return torch.cat([converted, out[:, c:]], dim=1) if out.shape[1] > c else converted

    @property
    def schedule(self) -> Any:
        if self._schedule is None:
            from dkdm_zoo.diffusion import schedule_for

            self._schedule = schedule_for(self.spec)
        return self._schedule

    # -- LoRA: adapters on the teacher's own (shared, frozen) network -----------------------------------
    @property
    def is_lora(self) -> bool:
        return bool(self.config.lora)

    def attach_base(self, source: nn.Module) -> TeacherNetwork:
        """Use ``source``'s tensors (the teacher's network) as this LoRA student's frozen base: shared,
        never copied."""
        tensors = dict(source.named_parameters())
        tensors.update(dict(source.named_buffers()))
        for name, _ in [*self.network.named_parameters(), *self.network.named_buffers()]:
            if LORA_KEY in name:
                continue
            path, _, attr = name.replace(".base_layer", "").rpartition(".")
            owner_path = name.rpartition(".")[0]
            owner = self.network.get_submodule(owner_path)
            shared = tensors[f"{path}.{attr}" if path else attr]
            if attr in owner._parameters:
                owner._parameters[attr] = shared
            else:
                owner._buffers[attr] = shared
        return self

    @classmethod
    def around(
        cls, network: ModelMixin, spec: TeacherSpec, prediction_type: str, **config: Any
    ) -> TeacherNetwork:
        """A student holding ``network`` itself (no copy, no random initialisation of a second one)."""
        from accelerate import init_empty_weights

        from dkdm_zoo.registry.classes import class_reference, public_config

        with init_empty_weights():  # the config's network is built on the meta device, then replaced
            model = cls(
                class_reference(network),
                public_config(network.config),
                spec.to_dict(),
                prediction_type,
                **config,
            )
        model.network = keep_labels(network)
        if model.is_lora:
            adapters_only(model)
        return model

    def merged(self) -> TeacherNetwork:
        """A full (non-LoRA) copy with the adapters merged into the base weights: what a pipeline
        without a LoRA loader (DDPMPipeline, DiTPipeline) holds. The shared base is left untouched.
        The copy keeps the base's dtype (a bf16 teacher's base gives a bf16 network, as peft's
        ``merge_and_unload`` does; each sum is taken in float32) and is the only copy made: the
        network is built empty and adopts the merged tensors (a 12B FLUX base: 24 GB, not 72)."""
        if not self.is_lora:
            return self
        state = {}
        for name, module in self.network.named_modules():
            base = getattr(module, "base_layer", None)
            if base is not None and hasattr(module, "get_delta_weight"):
                for key, tensor in base.state_dict().items():
                    state[f"{name}.{key}"] = tensor.detach().clone()
                weight = state[f"{name}.weight"]
                delta = module.get_delta_weight("default").float()
                state[f"{name}.weight"] = (weight.float() + delta).to(weight.dtype)
        plain_names = {}
        for key, tensor in [*self.network.named_parameters(), *self.network.named_buffers()]:
            if LORA_KEY not in key and ".base_layer." not in key:
                plain_names[key] = tensor.detach().clone()
        state.update(plain_names)
        config = {k: v for k, v in self.config.items() if not k.startswith("_")}
        from accelerate import init_empty_weights

        with init_empty_weights():  # the merged tensors are the network's: nothing allocated twice
            plain = model_from_reference(
                config["network_class"], config["network_config"], where="a merged LoRA student"
            )
        plain.load_state_dict(state, strict=True, assign=True)
        plain = plain.to(device=next(self.network.parameters()).device)
        return TeacherNetwork.around(
            plain,
            self.spec,
            config["prediction_type"],
            calling=config["calling"],
            output_type=config["output_type"],
            source={**(config["source"] or {}), "merged_lora": config["lora"]},
        ).eval()


LORA_KEY = "lora_"


def add_lora(network: nn.Module, lora: dict[str, Any]) -> nn.Module:
    """peft LoRA adapters (rank, alpha, target module names) on ``network``; only they train."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise UserError("LoRA students need peft: pip install 'dkdm-zoo[lora]'") from None

    config = LoraConfig(
        r=int(lora["rank"]),
        lora_alpha=float(lora["alpha"]),
        target_modules=list(lora["targets"]),
        init_lora_weights=True,
    )
    try:
        inject_adapter_in_model(config, network)
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"student.lora_targets {list(lora['targets'])}: {first}") from None
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(LORA_KEY in name)
    return network


def adapters_only(module: nn.Module) -> nn.Module:
    """``module.state_dict()`` (checkpoints, ``save_pretrained``, the EMA's names) holds only the LoRA
    adapters, wherever the module sits (a one-step generator's backbone); loading expects only them.
    The base is the teacher's network: never saved, never duplicated."""

    def drop_base(_module: nn.Module, state: dict[str, Any], prefix: str, _meta: Any) -> None:
        for key in [k for k in state if k.startswith(prefix) and LORA_KEY not in k]:
            del state[key]

    def base_is_shared(_module: nn.Module, keys: Any) -> None:
        keys.missing_keys[:] = [k for k in keys.missing_keys if LORA_KEY in k]

    module._register_state_dict_hook(drop_base)
    module.register_load_state_dict_post_hook(base_is_shared)
    return module


def lora_copy(source: nn.Module, lora: dict[str, Any]) -> nn.Module:
    """Another LoRA-adapted view of ``source``: new adapters, the same (shared, frozen) base tensors."""
    import copy

    shared = {id(t): t for t in [*source.parameters(), *source.buffers()]}
    return adapters_only(add_lora(keep_labels(copy.deepcopy(source, shared)).train(), lora))


def lora_network(model: nn.Module) -> TeacherNetwork | None:
    """The LoRA teacher-network student inside ``model`` (itself, or a one-step generator's backbone)."""
    network = getattr(model, "backbone", model)
    return network if isinstance(network, TeacherNetwork) and network.is_lora else None


def keep_labels(network: nn.Module) -> nn.Module:
    """No classifier-free-guidance label dropout in training (diffusers' ``LabelEmbedding``, as DiT's):
    a student learns the teacher's output for the label it is given; the null label is a label."""
    for module in network.modules():
        if type(module).__name__ == "LabelEmbedding" and hasattr(module, "dropout_prob"):
            module.dropout_prob = 0.0
    return network


def is_teacher_network(model: Any) -> bool:
    return isinstance(model, TeacherNetwork)
