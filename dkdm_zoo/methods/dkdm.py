"""DKDM: dynamic iterative distillation (Xiang et al., CVPR 2025).

A pool of noisy samples, each with its own next timestep index k, is the only data source. Every
training step draws b distinct slots, resets finished ones to pure noise at k = T-1, runs ONE
teacher forward on the b samples at their own timesteps, trains the student on (x_t, t, cond)
against that forward, and writes the teacher's ancestral x_{t-1} back with k - 1. A slot whose
step at t = 0 was taken (k = -1, a clean sample) is finished: clean x0 is never trained on.

The step makes every decision on the host (``methods.pool``), so it never reads the device; the
pool is filled before training by one of ``methods.pool_init``'s resumable initialisations.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from dkdm_zoo.errors import UserError
from dkdm_zoo.methods.base import (
    STUDENT,
    Logs,
    Method,
    MethodOptions,
    Passes,
    Plan,
    SetupContext,
    drop_refs,
    student_eps,
)
from dkdm_zoo.methods.losses import (
    LossTarget,
    LossWeighting,
    eps_loss_weights,
    teacher_student_kl,
)
from dkdm_zoo.methods.pool import Placement, Pool, choose_placement, slot_bytes
from dkdm_zoo.methods.pool_init import PoolInit, PoolInitKind, expected_forwards_per_slot
from dkdm_zoo.registry.options import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    UnitInterval,
)
from dkdm_zoo.sampling.progress import progress_bar
from dkdm_zoo.teachers.base import Teacher, host_to_device

Variant = Literal["dynamic", "iterative", "shuffled"]


@dataclass(frozen=True)
class DKDMOptions(MethodOptions):
    """DKDM's options: pool size and initialisation, the paper's ablation variants, the loss's levers."""

    rho: PositiveFloat = 0.4  # pool slots = round(rho T) x batch
    variant: Variant = "dynamic"
    pool_init: PoolInitKind = "ddim"
    pool_init_steps: PositiveInt = 10
    pool_init_batch: NonNegativeInt = 0  # 0: max(4 b, 64) slots per initialisation chunk
    pool_placement: Placement = "auto"
    kl_weight: NonNegativeFloat = 1.0  # learned-variance teachers: the KL term on the variance
    cond_drop_prob: UnitInterval = 0.0
    target: LossTarget = "eps"
    weighting: LossWeighting = "none"
    snr_gamma: PositiveFloat = 5.0
    #: BK-SDM's feature distillation for students made from the teacher: the weight of the summed MSE
    #: between corresponding blocks' outputs (0: off)
    feature_weight: NonNegativeFloat = 0.0


class DKDM(Method):
    """Dynamic iterative distillation; ``variant`` selects the paper's ablations. On a flow-matching
    teacher the pool walks its training grid by Euler steps and the student learns its velocity."""

    Options = DKDMOptions
    supports_flow = True

    def __init__(self, teacher: Teacher, student: nn.Module, **options: Any):
        super().__init__(teacher, student)
        self.options = DKDMOptions(**options)
        self.features = None
        if self.options.feature_weight > 0:
            from dkdm_zoo.methods.features import FeatureMatch

            self.features = FeatureMatch(teacher.denoiser(), student)
        self.T = teacher.spec.num_train_timesteps
        # Per-timestep weights of the eps MSE (host table: a step indexes it without reading the device);
        # None for the paper's plain eps MSE.
        self.loss_weights: np.ndarray | None = None
        if (self.options.target, self.options.weighting) != ("eps", "none"):
            if teacher.spec.process == "flow":
                raise UserError(
                    "method.target and method.weighting reweight a VP chain's eps loss: a flow-matching "
                    "teacher's students learn its velocity with the plain MSE; leave them at eps and none"
                )
            acp = teacher.schedule.alphas_cumprod.numpy()
            self.loss_weights = eps_loss_weights(
                acp, self.options.target, self.options.weighting, self.options.snr_gamma
            ).astype(np.float32)
        self.init_forwards = 0  # of teacher_forwards, those spent initialising the pool
        self.pool: Pool | None = None
        self.init: PoolInit | None = None  # an initialisation not finished yet (resumable)

    # -- sizes and budget --------------------------------------------------------------------------
    def pool_size(self, batch_size: int, steps: int | None = None, grad_accum: int = 1) -> int:
        """round(rho T) b slots (the paper's pool), but no more than the run will ever draw
        (steps x grad_accum x b): a short trial does not initialise slots it never uses."""
        if self.options.variant != "dynamic":
            return batch_size
        slots = max(1, round(self.options.rho * self.T)) * batch_size
        return slots if steps is None else min(slots, steps * grad_accum * batch_size)

    def expected_init_forwards_per_slot(self) -> float:
        if self.options.variant == "iterative":
            return 0.0
        return expected_forwards_per_slot(self.options.pool_init, self.options.pool_init_steps, self.T)

    def plan(self, batch_size: int, steps: int, grad_accum: int = 1) -> Plan:
        """Per-process sizes and teacher-forward budget (samples, CFG counted twice)."""
        n = self.pool_size(batch_size, steps, grad_accum)
        cost = self.teacher_cost()
        spec = self.teacher.spec
        pool_bytes = n * slot_bytes(spec.sample_shape, spec.conditioning != "none")
        return Plan(
            init_forwards=round(n * self.expected_init_forwards_per_slot() * cost),
            train_forwards=steps * grad_accum * batch_size * cost,
            state_bytes={"pool": pool_bytes},
            details={
                "pool_slots": n,
                "pool_init": "none (iterative)"
                if self.options.variant == "iterative"
                else self.options.pool_init,
                "pool_placement": self.options.pool_placement,
            },
            passes={"teacher": Passes(forward=cost), STUDENT: Passes(1, 1)},
        )

    def placement(self, batch_size: int, device: torch.device) -> str:
        spec = self.teacher.spec
        pool_bytes = self.pool_size(batch_size) * slot_bytes(spec.sample_shape, spec.conditioning != "none")
        return choose_placement(self.options.pool_placement, pool_bytes, device)

    # -- setup ---------------------------------------------------------------------------------------
    def setup(self, ctx: SetupContext) -> None:
        super().setup(ctx)
        wanted = self.pool_size(ctx.batch_size, ctx.steps, ctx.grad_accum)
        if self.pool is None:  # a fresh start (a resumed run restored its pool in load_state_dict)
            self.pool = self._new_pool(wanted)
            if self.options.variant == "iterative":
                self.pool.k[:] = self.T - 1
                self.pool.write(np.arange(len(self.pool)), self.noise(len(self.pool)))
                if self.pool.refs is not None:
                    self.pool.refs[:] = self.teacher.draw_refs(len(self.pool), self.host_rng)
            else:
                self.init = self._new_init(np.arange(wanted))
        elif self.init is None and wanted > len(self.pool):  # resumed with more steps: a bigger pool
            self._grow(wanted)
        if self.init is not None:
            self._run_init(ctx)

    def _new_init(self, slots: np.ndarray) -> PoolInit:
        assert self.pool is not None
        draw = lambda n: self.teacher.draw_refs(n, self.host_rng)  # noqa: E731
        return PoolInit(
            self.options.pool_init,
            self.options.pool_init_steps,
            self.pool,
            self.T,
            self.host_rng,
            draw,
            slots,
        )

    def _grow(self, n: int) -> None:
        """More slots for a run resumed with more steps than its pool was sized for; the new ones
        are initialised like the first (resumably), the old ones keep their state."""
        assert self.pool is not None
        old = self.pool
        self.pool = self._new_pool(n)
        self.pool.load_state_dict(old.state_dict(), partial=True)
        self.init = self._new_init(np.arange(len(old), n))

    def _new_pool(self, n: int) -> Pool:
        spec = self.teacher.spec
        return Pool(
            n,
            spec.sample_shape,
            self.device,
            placement=self.options.pool_placement,
            conditional=spec.conditioning != "none",
        )

    def _run_init(self, ctx: SetupContext) -> None:
        assert self.pool is not None and self.init is not None
        init, pool = self.init, self.pool
        if ctx.show_progress:
            from rich.console import Console

            where = "pinned host memory" if pool.on_host else str(self.device)
            Console(stderr=True, highlight=False).print(
                f"pool: {len(pool):,} slots, {pool.nbytes / 2**30:.2f} GiB in {where} "
                f"(method.pool_placement={self.options.pool_placement}); init {init.kind}, "
                f"{init.total_forwards() * self.teacher_cost():,} teacher forwards"
            )
        chunk = self.options.pool_init_batch or max(4 * ctx.batch_size, 64)
        with progress_bar(
            init.total_forwards(), f"pool init ({init.kind})", enabled=ctx.show_progress
        ) as advance:
            advance(self.teacher_forwards // self.teacher_cost())  # a resumed init starts where it stopped
            init.run(self, pool, chunk, advance, ctx.save_progress)
        self.init_forwards = self.teacher_forwards  # nothing but the init has used the teacher yet
        self.init = None

    def noise(self, n: int) -> Tensor:
        shape = (n, *self.teacher.spec.sample_shape)
        gen = self.generator
        return torch.randn(shape, generator=gen, device=gen.device if gen is not None else None).to(
            self.device
        )

    # -- one training step ---------------------------------------------------------------------------
    def draw(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """b distinct slots (all of them for the iterative variants) and which of them finished;
        finished slots are reset (k = T-1, a new condition). Host only: no device read."""
        assert self.pool is not None, "setup() first"
        n = len(self.pool)
        if batch_size > n or (self.options.variant != "dynamic" and batch_size != n):
            raise UserError(
                f"batch size {batch_size} does not fit the DKDM pool of {n} slots built for batch {self.batch_size}; "
                "keep train.batch_size when resuming"
            )
        if self.options.variant == "dynamic":
            idx = self.host_rng.choice(n, batch_size, replace=False)
        else:
            idx = np.arange(n)
        finished = self.pool.k[idx] < 0
        if finished.any():
            slots = idx[finished]
            self.pool.k[slots] = self.T - 1
            if self.pool.refs is not None:
                self.pool.refs[slots] = self.teacher.draw_refs(len(slots), self.host_rng)
        return idx, finished

    def loss(self, student: nn.Module, batch_size: int, step: int) -> tuple[Tensor, Logs]:
        assert self.pool is not None
        idx, finished = self.draw(batch_size)
        k_host = self.pool.k[idx].copy()
        x = self.pool.read(idx)
        if finished.any():  # finished slots start again from pure noise
            x[host_to_device(np.nonzero(finished)[0], self.device)] = self.noise(int(finished.sum()))
        k = host_to_device(k_host.astype(np.int64), self.device)
        refs = None if self.pool.refs is None else self.pool.refs[idx]
        cond = self.teacher.conditions_from_refs(
            drop_refs(self.teacher, refs, self.options.cond_drop_prob, self.host_rng)
        )
        t = self.teacher.schedule.time_of(k)  # the networks' timesteps of the chain indices
        with self._recording("teacher", len(x)):
            pred = self.predict_teacher(x, t, cond)
        x_prev, _ = self.teacher.chain_step(x, k, cond, prediction=pred, generator=self.generator)
        self.pool.write(idx, x_prev)
        self.pool.k[idx] = k_host - 1

        spec = self.teacher.spec
        with self._recording("student", len(x)):
            eps, var = student_eps(
                student, x, t, cond.to(self.device) if cond is not None else None, spec.channels
            )
        target = self.teacher.student_target(pred).to(eps.device)  # eps, or the velocity on a flow path
        per_sample = (eps.float() - target).pow(2).flatten(1).mean(dim=1)
        mse = per_sample.mean()
        logs: Logs = {
            "mse": mse.detach(),
            "t_mean": float(k_host.mean()),
            "pool_resets": float(finished.sum()),
        }
        loss = mse
        if self.loss_weights is not None:  # the MSE in method.target space, method.weighting-weighted
            loss = (host_to_device(self.loss_weights[k_host], eps.device) * per_sample).mean()
        if spec.learned_variance and self.options.kl_weight > 0:
            if var is None or pred.var_values is None:
                raise UserError("the teacher has a learned variance but the student outputs eps only")
            kl = teacher_student_kl(
                self.teacher.schedule, x, k, target, pred.var_values.to(var.device), eps, var
            ).mean()
            loss = loss + self.options.kl_weight * kl
            logs["kl"] = kl.detach()
        if self.features is not None:
            features = self.features.loss()
            loss = loss + self.options.feature_weight * features
            logs["feature_mse"] = features.detach()
        return loss, logs

    def _recording(self, side: str, batch: int) -> Any:
        return self.features.recording(side, batch) if self.features is not None else contextlib.nullcontext()

    # -- state -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(init_forwards=self.init_forwards, batch_size=self.batch_size)
        if self.pool is not None:
            state.update(self.pool.state_dict())
        if self.init is not None:
            state.update(self.init.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.init_forwards = int(state.get("init_forwards", 0))
        self.batch_size = int(state.get("batch_size") or self.batch_size)
        if "pool_x" in state:
            self.pool = self._new_pool(len(state["pool_x"]))
            self.pool.load_state_dict(state)
        if "init_kind" in state:
            assert self.pool is not None
            self.init = PoolInit.from_state(state, self.pool, self.T, self.device)
