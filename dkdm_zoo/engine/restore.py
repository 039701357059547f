"""Reading a checkpoint back (``--resume``): the newest one every process can read, each file
checked as it is restored (a tampered step, a missing key, a folder where a file belongs are an
unreadable checkpoint, named in one line, and resuming falls back to an older one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from dkdm_zoo.engine.checkpoint import (
    NAME_PATTERN,
    UnreadableFile,
    find_latest,
    list_checkpoints,
    load_mixed,
    load_torch,
    network_files,
    read_checked,
    trained_named,
)
from dkdm_zoo.errors import UserError


def load_training_state(
    folder: Path, rank: int, trained: Any, ema: Any, generator, device, sharded: bool = False
) -> tuple[int, dict[str, Any]]:
    """Restore networks, optimisers, schedules, EMA and RNG; return (step, this process's method state).

    The lr schedules continue from the checkpoint's step but with this run's settings: the learning
    rate, warm-up, schedule and total steps of the (possibly changed) recipe take effect.
    """
    from safetensors.torch import load_model

    # state.json first: a step that is not this folder's (a tampered or copied file) is not believed
    state = read_checked(folder / "state.json", lambda p: json.loads(p.read_text()))
    step = state.get("step") if isinstance(state, dict) else None
    match = NAME_PATTERN.match(folder.name)
    if type(step) is not int or match is None or step != int(match.group(1)):
        raise UnreadableFile(f"state.json: step {step!r} is not the step of {folder.name}")
    base_lrs = {name: list(net.lr_schedule.base_lrs) for name, net in trained.items()}  # this run's lr
    if sharded:  # every process its shards of the networks, optimisers and EMA (collective)
        from dkdm_zoo.engine.shards import NETWORKS, load_networks

        read_checked(folder / NETWORKS, lambda _: load_networks(folder, trained, ema))
    for name, net in trained.items():
        weights, optimizer, schedule = network_files(name)
        if not sharded:
            read_checked(
                folder / weights, lambda p, net=net: load_model(net.module, str(p), device=str(device))
            )
            read_checked(
                folder / optimizer, lambda p, net=net: net.optimizer.load_state_dict(load_torch(p, device))
            )
        read_checked(
            folder / schedule, lambda p, net=net: net.lr_schedule.load_state_dict(json.loads(p.read_text()))
        )
        _continue_schedule(net.lr_schedule, base_lrs[name])
    if ema is not None and not sharded and (folder / "ema.json").exists():

        def load_ema(_: Path) -> None:
            state = load_mixed(folder, "ema")
            names = [name for name, _ in trained_named(trained["student"].module)]
            state["shadow_params"] = [state.pop(name).to(device) for name in names]
            ema.load_state_dict(state)

        read_checked(folder / "ema.safetensors", load_ema)

    def load_rng(_: Path) -> None:
        rng = load_mixed(folder, f"rng-rank{rank}")
        wrong = [k for k, v in rng.items() if not (isinstance(v, torch.Tensor) and v.dtype == torch.uint8)]
        if wrong or not {"torch", "method"} <= rng.keys():
            raise ValueError(f"expected uint8 RNG states torch and method, got {sorted(rng)} ({wrong} not)")
        torch.set_rng_state(rng["torch"].to(torch.uint8))
        generator.set_state(rng["method"].to(torch.uint8))
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"].to(torch.uint8))

    read_checked(folder / f"rng-rank{rank}.safetensors", load_rng)
    method_state = load_mixed(folder, f"method-rank{rank}")
    # every method's state holds the base Method's counters and host RNG: an emptied or
    # hand-edited file is refused here rather than silently restarting the method
    missing = [key for key in METHOD_STATE_KEYS if key not in method_state]
    if missing or any(type(method_state.get(k)) is not int for k in METHOD_STATE_KEYS[:2]):
        what = f"no {', '.join(missing)}" if missing else "teacher_forwards/teacher_calls are not integers"
        raise UnreadableFile(f"method-rank{rank}.json: {what}")
    return step, method_state


def check_method_state(state: Any, who: str) -> None:
    """A method's ``state_dict()`` is checkpointable: a dict of tensors and JSON values (checked at
    set-up, not at the first checkpoint after hours of training)."""
    if not isinstance(state, dict):
        raise UserError(f"{who}.state_dict() returned {type(state).__name__}, not a dict")
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            continue
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise UserError(
                f"{who}.state_dict()[{key!r}] is a {type(value).__name__}, which a checkpoint cannot hold "
                f"({exc}): return a torch.Tensor or JSON values (numbers, strings, lists, dicts)"
            ) from None


#: what every method's state_dict holds (``methods.base.Method.state_dict``)
METHOD_STATE_KEYS = ("teacher_forwards", "teacher_calls", "host_rng")


def _continue_schedule(schedule: Any, base_lrs: list[float]) -> None:
    """The restored schedule's step with this run's base lr and lr function (a LambdaLR, as diffusers'
    ``get_scheduler`` builds): unchanged settings give exactly the saved learning rate."""
    from torch.optim.lr_scheduler import LambdaLR

    if not isinstance(schedule, LambdaLR):
        return
    schedule.base_lrs = list(base_lrs)
    for group, base, lr_lambda in zip(
        schedule.optimizer.param_groups, base_lrs, schedule.lr_lambdas, strict=True
    ):
        group["initial_lr"] = base
        group["lr"] = base * lr_lambda(schedule.last_epoch)
    schedule._last_lr = [group["lr"] for group in schedule.optimizer.param_groups]


def resume_from(
    checkpoints: Path, acc: Any, trained: Any, ema: Any, generator, device, announce: Any
) -> tuple[int, dict[str, Any] | None]:
    """Load the newest checkpoint every process can read: ``latest``, else older ones, newest first,
    saying in one line which one (and which were skipped, and why). No checkpoint, checkpoints that
    all fail to load, or were written by another number of processes: a ``UserError``."""
    from dkdm_zoo.engine.sharding import DDP, FSDP, is_sharded

    candidates = _candidates(checkpoints)
    skipped: list[str] = []
    sharding = FSDP if is_sharded(acc) else DDP
    for folder in candidates:
        saved_world = _saved_world_size(folder)
        if saved_world is not None and saved_world != acc.num_processes:
            raise UserError(
                f"--resume: {folder} was written by {saved_world} processes, this run has {acc.num_processes}; "
                f"resume with {saved_world} (each process's method state and RNG are its own)"
            )
        saved_sharding = _saved_sharding(folder)
        if saved_world is not None and saved_sharding != sharding:
            raise UserError(
                f"--resume: {folder} holds {saved_sharding} checkpoint files, this run shards with {sharding}; "
                f"resume with train.sharding='{saved_sharding}'"
            )
        try:
            if saved_world is None:
                raise ValueError("state.json: unreadable")
            loaded: tuple[int, dict[str, Any]] | None = load_training_state(
                folder, acc.process_index, trained, ema, generator, device, sharded=sharding == FSDP
            )
            reason = ""
        except UnreadableFile as exc:  # truncated safetensors, bad JSON, a torch.load error: fall back
            loaded, reason = None, str(exc)
        except ValueError as exc:
            loaded, reason = None, str(exc)
        ok = torch.tensor([float(loaded is not None)], device=device)
        if acc.num_processes > 1:
            ok = acc.reduce(ok, "sum") / acc.num_processes
        if float(ok.item()) == 1.0 and loaded is not None:
            announce(
                f"--resume: {''.join(s + '; ' for s in skipped)}resuming from {folder.name} (step {loaded[0]})"
            )
            return loaded
        skipped.append(f"{folder.name} is unreadable ({reason or 'on another process'})")
    if skipped:
        raise UserError(
            f"--resume: no readable checkpoint in {checkpoints}: {'; '.join(skipped)}; start a new run "
            "(--overwrite) or restore a checkpoint"
        )
    raise UserError(
        f"--resume: {checkpoints} holds no checkpoint to resume from; start the run again with --overwrite"
    )


def _candidates(checkpoints: Path) -> list[Path]:
    """Complete checkpoints, the ``latest`` pointer's first, then the others newest first."""
    found = [folder for _, folder in reversed(list_checkpoints(checkpoints))]
    latest = find_latest(checkpoints)
    if latest is not None and latest in found:
        found.remove(latest)
        found.insert(0, latest)
    return found


def _saved_world_size(folder: Path) -> int | None:
    try:
        return int(json.loads((folder / "state.json").read_text())["world_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _saved_sharding(folder: Path) -> str:
    """How a checkpoint holds its networks: "fsdp" (per-process shards) or "ddp" (whole files; also
    every checkpoint written before sharding existed)."""
    try:
        state = json.loads((folder / "state.json").read_text())
        return "fsdp" if state.get("sharding") == "fsdp" else "ddp"
    except (OSError, ValueError, AttributeError):
        return "ddp"
