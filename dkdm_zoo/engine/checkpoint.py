"""Atomic checkpoints: every file is written into a temp folder beside the final one, fsynced, then
the folder is renamed into place and the ``latest`` pointer is updated last. A kill at any moment
leaves the previous checkpoint loadable; stray temp folders are ignored and cleaned up.

Tensors go to safetensors, small values to JSON; only the optimiser state uses torch.save, and it
is read back with ``weights_only=True``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from dkdm_zoo.errors import UserError

LATEST = "latest"
RECIPE = "recipe.toml"  # in a checkpoint: the recipe it was trained with
TEMP_PREFIX = ".tmp-"
NAME_PATTERN = re.compile(r"^checkpoint-(\d{7,})$")


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:07d}"


def temp_folder(checkpoints: Path, step: int) -> Path:
    return checkpoints / f"{TEMP_PREFIX}{checkpoint_name(step)}"


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (folder entries make renames durable); ignored where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    fsync_path(path)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}")
    try:
        tmp.write_text(text)
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


# -- splitting a state dict into tensors and JSON ---------------------------------------------------
def save_mixed(state: dict[str, Any], folder: Path, stem: str) -> None:
    """Top-level tensor values -> ``stem.safetensors``; everything else -> ``stem.json``."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
    rest = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    save_file(tensors, str(folder / f"{stem}.safetensors"))
    fsync_path(folder / f"{stem}.safetensors")
    write_json(folder / f"{stem}.json", rest)


def load_mixed(folder: Path, stem: str) -> dict[str, Any]:
    state = read_checked(folder / f"{stem}.json", lambda p: json.loads(p.read_text()))
    if not isinstance(state, dict):
        raise UnreadableFile(f"{stem}.json: not a JSON object")
    state.update(read_checked(folder / f"{stem}.safetensors", lambda p: load_file(str(p))))
    return state


def save_torch(obj: Any, path: Path) -> None:
    torch.save(obj, path)
    fsync_path(path)


def load_torch(path: Path, device: torch.device | str = "cpu") -> Any:
    return torch.load(path, map_location=device, weights_only=True)


# -- finding, publishing and pruning ---------------------------------------------------------------------
def is_complete(folder: Path) -> bool:
    return folder.is_dir() and (folder / "state.json").is_file()


def list_checkpoints(checkpoints: Path) -> list[tuple[int, Path]]:
    found = []
    if checkpoints.is_dir():
        for child in checkpoints.iterdir():
            match = NAME_PATTERN.match(child.name)
            if match and is_complete(child):
                found.append((int(match.group(1)), child))
    return sorted(found)


def find_latest(checkpoints: Path) -> Path | None:
    """The ``latest`` pointer's checkpoint if complete, else the newest complete one."""
    pointer = checkpoints / LATEST
    if pointer.is_file():
        candidate = checkpoints / pointer.read_text().strip()
        if is_complete(candidate):
            return candidate
    found = list_checkpoints(checkpoints)
    return found[-1][1] if found else None


def publish(temp: Path, checkpoints: Path, step: int, keep: int) -> Path:
    """Rename a fully written temp folder into place, update ``latest``, prune old ones (main process)."""
    final = checkpoints / checkpoint_name(step)
    fsync_path(temp)
    if final.exists():  # a re-run over the same step: move the old one aside first
        old = checkpoints / f"{TEMP_PREFIX}old-{final.name}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(temp, final)
    fsync_path(checkpoints)
    write_text_atomic(checkpoints / LATEST, final.name)
    for _, folder in list_checkpoints(checkpoints)[:-keep]:
        shutil.rmtree(folder, ignore_errors=True)
    return final


def clean_temp(checkpoints: Path) -> None:
    """Remove half-written folders left by a killed run."""
    if checkpoints.is_dir():
        for child in checkpoints.iterdir():
            if child.name.startswith(TEMP_PREFIX):
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)


# -- the training state: networks, optimisers, schedules, EMA, method state, RNG --------------------
def network_files(name: str) -> tuple[str, str, str]:
    """Weights, optimiser and lr-schedule files of a network (the student keeps the historical names)."""
    suffix = "" if name == "student" else f"-{name}"
    return f"{name}.safetensors", f"optimizer{suffix}.pt", f"lr_schedule{suffix}.json"


def rng_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "method": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def save_training_state(
    acc: Any,
    checkpoints: Path,
    step: int,
    trained: Any,
    ema: Any,
    method: Any,
    generator,
    keep: int,
    recipe_text: str | None = None,
) -> Path | None:
    """Write checkpoint ``step`` atomically (collective: every process calls it).

    ``trained`` maps network names to objects with ``module``, ``optimizer`` and ``lr_schedule``.
    Each process writes its method state and RNG (and, sharded, its shards of the networks:
    ``engine.shards``); the main process writes the shared rest. A write that fails on any process
    (a full disk) fails on all of them together, after the half-written folder is removed: the
    previous checkpoint stays the latest.
    """
    from safetensors.torch import save_model

    from dkdm_zoo.engine.sharding import FSDP, is_sharded

    temp = temp_folder(checkpoints, step)
    rank = acc.process_index
    sharded = is_sharded(acc)
    if acc.is_main_process:
        clean_temp(checkpoints)
        temp.mkdir(parents=True)
    acc.wait_for_everyone()
    error = _attempt(lambda: save_mixed(method.state_dict(), temp, f"method-rank{rank}"))
    error = error or _attempt(lambda: save_mixed(rng_state(generator), temp, f"rng-rank{rank}"))
    _raise_together(acc, error, checkpoints, step, trained, ema, method)
    sharded_json: dict[str, Any] = {}
    if sharded:
        from dkdm_zoo.engine.shards import NETWORKS, save_networks

        error = _attempt(lambda: sharded_json.update(save_networks(temp, trained, ema)))
        _raise_together(acc, error, checkpoints, step, trained, ema, method)
        if acc.is_main_process:  # every process's shards are written (dcp.save ends in a barrier)
            for shard in (temp / NETWORKS).iterdir():
                fsync_path(shard)

    def shared_files() -> None:
        for name, net in trained.items():
            weights, optimizer, schedule = network_files(name)
            write_json(temp / schedule, net.lr_schedule.state_dict())
            if sharded:
                continue
            save_model(net.module, str(temp / weights))
            fsync_path(temp / weights)
            save_torch(net.optimizer.state_dict(), temp / optimizer)
        for file_name, data in sharded_json.items():
            write_json(temp / file_name, data)
        if ema is not None and not sharded:
            student = trained["student"].module
            state = ema.state_dict()
            shadow = {
                name: p
                for (name, _), p in zip(trained_named(student), state.pop("shadow_params"), strict=True)
            }
            save_mixed({**state, **shadow}, temp, "ema")
        if recipe_text is not None:
            (temp / RECIPE).write_text(recipe_text)
            fsync_path(temp / RECIPE)
        state = {"step": step, "world_size": acc.num_processes, "sharding": FSDP if sharded else "ddp"}
        write_json(temp / "state.json", state)  # last: complete

    final = None
    error = _attempt(shared_files) if acc.is_main_process else None
    _raise_together(acc, error, checkpoints, step, trained, ema, method)
    if acc.is_main_process:
        error = _attempt(lambda: publish(temp, checkpoints, step, keep))
    _raise_together(acc, error, checkpoints, step, trained, ema, method)
    if acc.is_main_process:
        final = checkpoints / checkpoint_name(step)
    acc.wait_for_everyone()
    return final


class DiskFullError(UserError):
    """A checkpoint did not fit on the disk: the run stopped, the previous checkpoint is kept."""


def _attempt(write: Any) -> OSError | None:
    """The error of ``write`` as an OSError: safetensors (SafetensorError) and torch.save
    (RuntimeError) report a full disk with their own types, a plugin's state a JSON TypeError."""
    try:
        write()
    except OSError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - every writer's failure ends as one line, temp removed
        return as_os_error(exc)
    return None


def as_os_error(exc: BaseException) -> OSError:
    """An OSError carrying ``exc``'s errno where its text names one ("os error 28", "No space left")."""
    text = first_line(exc)
    match = re.search(r"os error (\d+)", text)
    code = int(match.group(1)) if match else (errno.ENOSPC if "No space left" in text else None)
    error = OSError(code, text) if code is not None else OSError(text)
    if code is None:
        error.strerror = text
    return error


def _raise_together(
    acc: Any, error: OSError | None, checkpoints: Path, step: int, trained, ema, method
) -> None:
    """Every process learns whether any write failed (one collective), then all raise the same way."""
    failed = error is not None
    if acc.num_processes > 1:
        flag = torch.tensor([float(failed)], device=acc.device)
        failed = float(acc.reduce(flag, "sum").item()) > 0
    if not failed:
        return
    if acc.is_main_process:
        clean_temp(checkpoints)  # frees what the half-written checkpoint took
    last = find_latest(checkpoints)
    need = checkpoint_bytes(trained, ema, method, acc.num_processes)
    free = shutil.disk_usage(checkpoints).free
    if error is not None and error.errno is None and free < need:  # torch.save's "unexpected pos"
        error.errno = errno.ENOSPC
    kept = (
        f"the last checkpoint ({last.name}) is kept" if last is not None else "no checkpoint was written yet"
    )
    if error is None or error.errno not in (errno.ENOSPC, errno.EDQUOT):
        reason = f"{error.strerror or error}" if error is not None else "another process failed to write it"
        raise UserError(f"cannot write checkpoint {step} in {checkpoints}: {reason}; {kept}")
    raise DiskFullError(
        f"no space left on the disk of {checkpoints} for checkpoint {step}: it needs about {_mib(need)} "
        f"({_mib(free)} free); {kept}: free some space, then run the same command with --resume"
    )


def checkpoint_bytes(trained: Any, ema: Any, method: Any, world_size: int = 1) -> int:
    """About what one checkpoint takes on disk: weights and AdamW moments of every network, the EMA
    copy, and each process's method state."""

    def tensor_bytes(values: Any) -> int:
        return sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))

    total = 0
    for net in trained.values():
        params = tensor_bytes(net.module.parameters())
        total += 3 * params  # weights, exp_avg, exp_avg_sq
    if ema is not None:
        total += tensor_bytes(trained["student"].module.parameters())
    total += world_size * tensor_bytes(method.state_dict().values())
    return total


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


class UnreadableFile(Exception):
    """A checkpoint file that cannot be read back (truncated, corrupt): resuming falls back."""


def read_checked(path: Path, load: Any) -> Any:
    try:
        return load(path)
    except UnreadableFile:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the reader raises, name the file
        raise UnreadableFile(f"{path.name}: {first_line(exc)}") from exc


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def trained_named(module: Any) -> list[tuple[str, Any]]:
    """(name, parameter) of what a network trains, in order: what the EMA shadows."""
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]
