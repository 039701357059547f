"""DKDM: dynamic iterative distillation (Xiang et al., CVPR 2025).

A pool of noisy samples, each with its own next timestep index k, is the only data source. Every
training step draws b distinct slots, resets finished ones to pure noise at k = T-1, runs ONE
teacher forward on the b samples at their own timesteps, trains the student on (x_t, t, cond)
against that forward, and writes the teacher's ancestral x_{t-1} back with k - 1. A slot whose
step at t = 0 was taken (k = -1, a clean sample) is finished: clean x0 is never trained on.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dkdm_zoo.errors import UserError
from dkdm_zoo.methods.base import STUDENT, Logs, Method, Passes, Plan, SetupContext, student_eps
from dkdm_zoo.methods.data import condition_from_tensors, condition_tensors, drop_condition
from dkdm_zoo.methods.losses import teacher_student_kl
from dkdm_zoo.teachers.base import Condition, Teacher

VARIANTS = ("dynamic", "iterative", "shuffled")
POOL_INITS = ("ancestral", "ddim")


class DKDM(Method):
    """Dynamic iterative distillation; ``variant`` selects the paper's ablations."""

    def __init__(
        self,
        teacher: Teacher,
        student: nn.Module,
        *,
        rho: float = 0.4,
        variant: str = "dynamic",
        pool_init: str = "ancestral",
        pool_init_steps: int = 10,
        pool_init_batch: int = 0,
        kl_weight: float = 1.0,
        cond_drop_prob: float = 0.0,
    ):
        if variant not in VARIANTS:
            raise UserError(f"method.variant={variant!r}: expected one of {', '.join(VARIANTS)}")
        if pool_init not in POOL_INITS:
            raise UserError(f"method.pool_init={pool_init!r}: expected one of {', '.join(POOL_INITS)}")
        if rho <= 0:
            raise UserError(f"method.rho must be > 0, got {rho}")
        if pool_init_steps < 1 or pool_init_batch < 0:
            raise UserError("method.pool_init_steps must be >= 1 and method.pool_init_batch >= 0")
        if not 0.0 <= cond_drop_prob < 1.0:
            raise UserError(f"method.cond_drop_prob must be in [0, 1), got {cond_drop_prob}")
        super().__init__(teacher, student)
        self.rho, self.variant, self.pool_init = rho, variant, pool_init
        self.pool_init_steps, self.pool_init_batch = pool_init_steps, pool_init_batch
        self.kl_weight, self.cond_drop_prob = kl_weight, cond_drop_prob
        self.T = teacher.spec.num_train_timesteps
        self.init_forwards = 0  # of teacher_forwards, those spent initialising the pool
        self.pool_x: Tensor | None = None
        self.pool_k: Tensor | None = None
        self.pool_cond: dict[str, Tensor] = {}
        self.cpu_generator = torch.Generator()

    # -- sizes and budget --------------------------------------------------------------------------
    def pool_size(self, batch_size: int) -> int:
        if self.variant == "dynamic":
            return max(1, round(self.rho * self.T)) * batch_size
        return batch_size

    def expected_init_forwards_per_slot(self) -> float:
        if self.variant == "iterative":
            return 0.0
        if self.pool_init == "ancestral":
            return (self.T - 2) / 2  # stop index uniform in 1..T-1, T-1-stop steps each
        return float(min(self.pool_init_steps, (self.T - 2) / 2))

    def plan(self, batch_size: int, steps: int, grad_accum: int = 1) -> Plan:
        """Per-process sizes and teacher-forward budget (samples, CFG counted twice)."""
        n = self.pool_size(batch_size)
        cost = self.teacher_cost()
        spec = self.teacher.spec
        slot_bytes = 4 * spec.channels * spec.sample_shape[1] * spec.sample_shape[2]
        return Plan(
            init_forwards=round(n * self.expected_init_forwards_per_slot() * cost),
            train_forwards=steps * grad_accum * batch_size * cost,
            state_bytes={"pool": n * slot_bytes},
            details={"pool_slots": n},
            passes={"teacher": Passes(forward=cost), STUDENT: Passes(1, 1)},
        )

    # -- setup ---------------------------------------------------------------------------------------
    def setup(self, ctx: SetupContext) -> None:
        super().setup(ctx)
        if ctx.resuming:
            return
        seed = int(torch.randint(0, 2**62, (1,), generator=ctx.generator, device=ctx.generator.device))
        self.cpu_generator = torch.Generator().manual_seed(seed)
        self.init_pool(ctx.batch_size)

    def _noise(self, n: int) -> Tensor:
        shape = (n, *self.teacher.spec.sample_shape)
        return torch.randn(shape, generator=self.generator, device=self.generator.device).to(self.device)

    def _new_conditions(self, n: int) -> dict[str, Tensor]:
        cond = self.teacher.sample_conditions(n, self.cpu_generator)
        return {k: v.to(self.device) for k, v in condition_tensors(cond).items()}

    def _cond(self, idx: Tensor | slice) -> Condition | None:
        return condition_from_tensors({k: v[idx] for k, v in self.pool_cond.items()})

    def _teacher_predict(self, x: Tensor, t: Tensor, cond: Condition | None):
        return self.predict_teacher(x, t, cond)

    def init_pool(self, batch_size: int) -> None:
        """Fill the pool: pure noise, then (except "iterative") denoised to random stop indices."""
        n = self.pool_size(batch_size)
        self.batch_size = batch_size
        self.pool_x = self._noise(n)
        self.pool_k = torch.full((n,), self.T - 1, dtype=torch.long, device=self.device)
        self.pool_cond = self._new_conditions(n)
        if self.variant == "iterative":
            return
        stop = torch.randint(1, self.T, (n,), generator=self.generator, device=self.generator.device).to(
            self.device
        )
        before = self.teacher_forwards
        chunk = self.pool_init_batch or 4 * batch_size
        if self.pool_init == "ancestral":
            self._init_ancestral(stop, chunk)
        else:
            self._init_ddim(stop, chunk)
        self.init_forwards += self.teacher_forwards - before

    def _progress(self, total: int, description: str):
        from dkdm_zoo.methods.data import progress_bar

        return progress_bar(total, description, enabled=self.show_progress)

    @torch.no_grad()
    def _init_ancestral(self, stop: Tensor, chunk: int) -> None:
        """The teacher's ancestral chain from T-1 down to each slot's stop index, batched over slots."""
        assert self.pool_x is not None and self.pool_k is not None
        total = int((self.T - 1 - stop).sum())
        with self._progress(total, "pool init (ancestral)") as advance:
            while True:
                active = torch.nonzero(self.pool_k > stop).flatten()
                if len(active) == 0:
                    break
                for idx in active.split(chunk):
                    x, k, cond = self.pool_x[idx], self.pool_k[idx], self._cond(idx)
                    pred = self._teacher_predict(x, k, cond)
                    x_prev, _ = self.teacher.step(x, k, cond, prediction=pred, generator=self.generator)
                    self.pool_x[idx] = x_prev.to(self.pool_x.dtype)
                    self.pool_k[idx] = k - 1
                    advance(len(idx))

    @torch.no_grad()
    def _init_ddim(self, stop: Tensor, chunk: int) -> None:
        """A deterministic DDIM jump to each slot's stop index in at most ``pool_init_steps`` forwards."""
        assert self.pool_x is not None and self.pool_k is not None
        steps = self.pool_init_steps
        frac = torch.linspace(0, 1, steps + 1, device=self.device, dtype=torch.float64)
        start = torch.full_like(stop, self.T - 1).double()
        times = torch.round(
            start[:, None] + (stop.double() - start)[:, None] * frac[None]
        ).long()  # (N, steps+1)
        total = int(sum(int((times[:, j] > times[:, j + 1]).sum()) for j in range(steps)))
        spec, schedule = self.teacher.spec, self.teacher.schedule
        with self._progress(total, "pool init (ddim)") as advance:
            for j in range(steps):
                active = torch.nonzero(times[:, j] > times[:, j + 1]).flatten()  # short chains skip repeats
                for idx in active.split(chunk):
                    x, t, prev = self.pool_x[idx], times[idx, j], times[idx, j + 1]
                    pred = self._teacher_predict(x, t, self._cond(idx))
                    x = schedule.ddim_step(
                        x.float(),
                        t,
                        prev,
                        pred.eps.to(x.device),
                        clip_sample=spec.clip_sample,
                        clip_sample_range=spec.clip_sample_range,
                    )
                    self.pool_x[idx] = x.to(self.pool_x.dtype)
                    advance(len(idx))
        self.pool_k = stop.clone()

    # -- one training step ---------------------------------------------------------------------------
    def draw(self, batch_size: int) -> Tensor:
        """b distinct slots (all of them for the iterative variants); finished slots are reset."""
        if self.pool_x is None:
            self.init_pool(batch_size)
        assert self.pool_x is not None and self.pool_k is not None
        n = len(self.pool_x)
        if batch_size > n or (self.variant != "dynamic" and batch_size != n):
            raise UserError(
                f"batch size {batch_size} does not fit the DKDM pool of {n} slots built for batch {self.batch_size}; "
                "keep train.batch_size when resuming"
            )
        if self.variant == "dynamic":
            idx = torch.randperm(n, generator=self.generator, device=self.generator.device)[:batch_size].to(
                self.device
            )
        else:
            idx = torch.arange(n, device=self.device)
        finished = idx[self.pool_k[idx] < 0]
        if len(finished):
            self.pool_x[finished] = self._noise(len(finished))
            self.pool_k[finished] = self.T - 1
            for key, value in self._new_conditions(len(finished)).items():
                self.pool_cond[key][finished] = value
        self.last_resets = len(finished)
        return idx

    def loss(self, student: nn.Module, batch_size: int, step: int) -> tuple[Tensor, Logs]:
        idx = self.draw(batch_size)
        assert self.pool_x is not None and self.pool_k is not None
        x, k = self.pool_x[idx], self.pool_k[idx]
        cond = drop_condition(self.teacher, self._cond(idx), self.cond_drop_prob, self.cpu_generator)
        pred = self._teacher_predict(x, k, cond)
        x_prev, _ = self.teacher.step(x, k, cond, prediction=pred, generator=self.generator)
        self.pool_x[idx] = x_prev.to(self.pool_x.dtype)
        self.pool_k[idx] = k - 1

        spec = self.teacher.spec
        eps, var = student_eps(
            student, x, k, cond.to(self.device) if cond is not None else None, spec.channels
        )
        target = pred.eps.to(eps.device)
        mse = F.mse_loss(eps.float(), target)
        logs: Logs = {"mse": mse.detach(), "t_mean": k.float().mean(), "pool_resets": float(self.last_resets)}
        loss = mse
        if spec.learned_variance and self.kl_weight > 0:
            if var is None or pred.var_values is None:
                raise UserError("the teacher has a learned variance but the student outputs eps only")
            kl = teacher_student_kl(
                self.teacher.schedule, x, k, target, pred.var_values.to(var.device), eps, var
            ).mean()
            loss = loss + self.kl_weight * kl
            logs["kl"] = kl.detach()
        return loss, logs

    # -- state -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            init_forwards=self.init_forwards,
            batch_size=self.batch_size,
            cpu_generator=self.cpu_generator.get_state(),
        )
        if self.pool_x is not None and self.pool_k is not None:
            state.update(pool_x=self.pool_x.cpu(), pool_k=self.pool_k.cpu())
            state.update({f"pool_cond_{k}": v.cpu() for k, v in self.pool_cond.items()})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.init_forwards = int(state.get("init_forwards", 0))
        self.batch_size = state.get("batch_size", self.batch_size)
        if "cpu_generator" in state:
            self.cpu_generator.set_state(state["cpu_generator"].to(torch.uint8))
        if "pool_x" in state:
            self.pool_x = state["pool_x"].to(self.device)
            self.pool_k = state["pool_k"].to(self.device).long()
            self.pool_cond = {
                k[len("pool_cond_") :]: v.to(self.device)
                for k, v in state.items()
                if k.startswith("pool_cond_")
            }
