"""Filling the DKDM pool before training: every slot needs a sample of the teacher's own chain at
its stop index s (uniform in 1..T-1). Three ways, each run level by level: chunked, with progress,
and resumable (a killed process continues at the level it stopped; the engine checkpoints
between levels).

- ``ancestral`` (the paper's): each slot's own ancestral chain from T-1 down to s;
  (T - 2) / 2 teacher forwards a slot on average.
- ``ddim``: a deterministic DDIM jump from T-1 to s in at most K = ``pool_init_steps`` forwards.
- ``trajectory``: ancestral chains shared by K-spaced slots: each chain is snapshotted at about
  (T - 1) / K evenly spaced stop indices, so a slot costs about K forwards and is an exact
  ancestral sample, but the slots of one chain are correlated (and share its condition).

Each process initialises its own pool, so the work is split across processes by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from dkdm_zoo.methods.pool import Pool
from dkdm_zoo.teachers.base import host_to_device

PoolInitKind = Literal["ancestral", "ddim", "trajectory"]


def slots_per_chain(T: int, steps: int) -> int:
    """Trajectory init: slots sharing one chain for about ``steps`` forwards a slot."""
    return max(1, min(T - 1, round((T - 1) / steps)))


def expected_forwards_per_slot(kind: str, steps: int, T: int) -> float:
    """Teacher forwards a slot costs on average (samples; guidance doubles each)."""
    if kind == "ancestral":
        return (T - 2) / 2  # stop uniform in 1..T-1, T-1-stop steps each
    if kind == "ddim":
        return float(min(steps, (T - 2) / 2))
    per_chain = slots_per_chain(T, steps)  # a chain runs from T-1 to about its lowest stop
    return (T - 1 - 0.5 * (T - 1) / per_chain) / per_chain


def _chunks(index: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(index), size):
        yield index[start : start + size]


class PoolInit:
    """One pool's initialisation in progress: which slots, where each must end, the next level to run."""

    def __init__(
        self,
        kind: str,
        steps: int,
        pool: Pool,
        T: int,
        rng: np.random.Generator,
        refs: Any,
        slots: np.ndarray | None = None,
    ):
        self.kind, self.steps, self.T = kind, steps, T
        self.slots = np.arange(len(pool)) if slots is None else np.asarray(slots, dtype=np.int64)
        n = len(self.slots)
        self.chains: Tensor | None = None
        self.chain_refs = None
        if kind == "trajectory":
            per = slots_per_chain(T, steps)
            self.chain_of = np.arange(n) // per
            count = int(self.chain_of[-1]) + 1
            offset = rng.random(count)[self.chain_of]  # stratified stops, one random offset per chain
            position = np.arange(n) % per
            self.target = (1 + np.floor((position + offset) * (T - 1) / per)).astype(np.int64).clip(1, T - 1)
            self.chain_refs = refs(count)  # a chain's slots share its condition (None: unconditional)
            if pool.refs is not None and self.chain_refs is not None:
                pool.refs[self.slots] = self.chain_refs[self.chain_of]
        else:
            self.target = rng.integers(1, T, n)
            drawn = refs(n)
            if pool.refs is not None and drawn is not None:
                pool.refs[self.slots] = drawn
        self.level = T - 1 if kind != "ddim" else 0
        self.noise_filled = False
        pool.k[self.slots] = T - 1

    def total_forwards(self) -> int:
        """Teacher forwards (samples) the whole initialisation takes, without guidance."""
        T = self.T
        if self.kind == "ancestral":
            return int((T - 1 - self.target).sum())
        if self.kind == "ddim":
            times = self._ddim_times()
            return int((times[:, :-1] > times[:, 1:]).sum())
        lowest = np.full(int(self.chain_of[-1]) + 1, T)
        np.minimum.at(lowest, self.chain_of, self.target)
        return int((T - 1 - lowest).sum())

    def _ddim_times(self) -> np.ndarray:
        frac = np.linspace(0.0, 1.0, self.steps + 1)
        start = self.T - 1
        return np.round(start + (self.target[:, None] - start) * frac[None]).astype(np.int64)

    # -- running -----------------------------------------------------------------------------------
    def run(
        self, method: Any, pool: Pool, chunk: int, advance: Callable[[int], None], save: Callable[[], None]
    ):
        """Run the remaining levels; ``save`` checkpoints between levels (the caller rate-limits it)."""
        with torch.no_grad():
            if self.kind != "trajectory" and not self.noise_filled:  # every slot starts as noise at T-1
                self._fill_noise(method, pool)
                self.noise_filled = True
            {"ancestral": self._ancestral, "ddim": self._ddim, "trajectory": self._trajectory}[self.kind](
                method, pool, chunk, advance, save
            )
        pool.k[self.slots] = self.target

    def _fill_noise(self, method: Any, pool: Pool) -> None:
        for idx in _chunks(self.slots, 65536):
            pool.write(idx, method.noise(len(idx)))

    def _step(self, method: Any, x: Tensor, k: Tensor, refs: np.ndarray | None) -> Tensor:
        """One step of the teacher's chain from index k (its own ancestral or, on a flow path, Euler step)."""
        cond = method.teacher.conditions_from_refs(refs)
        pred = method.predict_teacher(x, method.teacher.schedule.time_of(k), cond)
        x_prev, _ = method.teacher.chain_step(x, k, cond, prediction=pred, generator=method.generator)
        return x_prev

    def _ancestral(self, method, pool, chunk, advance, save) -> None:
        for tau in range(self.level, 1, -1):  # a slot with stop s takes the steps at levels T-1 .. s+1
            active = self.slots[self.target < tau]
            for idx in _chunks(active, chunk):
                t = torch.full((len(idx),), tau, dtype=torch.long, device=method.device)
                refs = None if pool.refs is None else pool.refs[idx]
                pool.write(idx, self._step(method, pool.read(idx), t, refs))
                advance(len(idx))
            pool.k[active] = tau - 1
            self.level = tau - 1
            save()

    def _ddim(self, method, pool, chunk, advance, save) -> None:
        times = self._ddim_times()
        spec, schedule = method.teacher.spec, method.teacher.schedule
        for j in range(self.level, self.steps):
            active = np.nonzero(times[:, j] > times[:, j + 1])[0]  # short chains skip repeated times
            for rows in _chunks(active, chunk):
                idx = self.slots[rows]
                x = pool.read(idx)
                t = schedule.time_of(host_to_device(times[rows, j], method.device))
                prev = schedule.time_of(host_to_device(times[rows, j + 1], method.device))
                refs = None if pool.refs is None else pool.refs[idx]
                pred = method.predict_teacher(x, t, method.teacher.conditions_from_refs(refs))
                x = schedule.jump(
                    x.float(),
                    t,
                    prev,
                    pred.eps.to(x.device),
                    pred.x0.to(x.device),
                    clip_sample=spec.clip_sample,
                    clip_sample_range=spec.clip_sample_range,
                )
                pool.write(idx, x)
                advance(len(idx))
            self.level = j + 1
            save()

    def _trajectory(self, method, pool, chunk, advance, save) -> None:
        count = int(self.chain_of[-1]) + 1
        if self.chains is None:
            self.chains = method.noise(count)
        lowest = np.full(count, self.T)
        np.minimum.at(lowest, self.chain_of, self.target)
        for tau in range(self.level, 0, -1):
            snap = np.nonzero(self.target == tau)[0]  # slots that stop here copy their chain
            if len(snap):
                pool.write(self.slots[snap], self.chains[host_to_device(self.chain_of[snap], method.device)])
            moving = np.nonzero(lowest < tau)[0]  # chains with a slot further down
            for idx in _chunks(moving, chunk):
                t = torch.full((len(idx),), tau, dtype=torch.long, device=method.device)
                rows = host_to_device(idx, method.device)
                refs = None if self.chain_refs is None else self.chain_refs[idx]
                self.chains[rows] = self._step(method, self.chains[rows], t, refs).to(self.chains.dtype)
                advance(len(idx))
            self.level = tau - 1
            save()
        self.chains = None

    # -- state (checkpointed with the pool while the initialisation runs) --------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "init_kind": self.kind,
            "init_steps": self.steps,
            "init_level": self.level,
            "init_noise_filled": self.noise_filled,
            "init_target": torch.from_numpy(self.target.copy()),
            "init_slots": torch.from_numpy(self.slots.copy()),
        }
        if self.kind == "trajectory":
            if self.chain_refs is not None:
                state["init_chain_refs"] = torch.from_numpy(self.chain_refs.copy())
            if self.chains is not None:
                state["init_chains"] = self.chains.cpu()
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], pool: Pool, T: int, device: torch.device) -> PoolInit:
        init = cls.__new__(cls)
        init.kind, init.steps, init.T = state["init_kind"], int(state["init_steps"]), T
        init.level = int(state["init_level"])
        init.noise_filled = bool(state["init_noise_filled"])
        init.target = state["init_target"].numpy().copy()
        init.slots = state["init_slots"].numpy().copy()
        init.chains = None
        init.chain_refs = None
        if init.kind == "trajectory":
            init.chain_of = np.arange(len(init.slots)) // slots_per_chain(T, init.steps)
            init.chain_refs = state["init_chain_refs"].numpy().copy() if "init_chain_refs" in state else None
            if "init_chains" in state:
                init.chains = state["init_chains"].to(device)
        return init
