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
_NAME = re.compile(r"^checkpoint-(\d{7,})$")


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
    tmp.write_text(text)
    fsync_path(tmp)
    os.replace(tmp, path)
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
    state = _read(folder / f"{stem}.json", lambda p: json.loads(p.read_text()))
    if not isinstance(state, dict):
        raise UnreadableFile(f"{stem}.json: not a JSON object")
    state.update(_read(folder / f"{stem}.safetensors", lambda p: load_file(str(p))))
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
            match = _NAME.match(child.name)
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
def _files(name: str) -> tuple[str, str, str]:
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
    Each process writes its method state and RNG; the main process writes the shared rest. A write
    that fails on any process (a full disk) fails on all of them together, after the half-written
    folder is removed: the previous checkpoint stays the latest.
    """
    from safetensors.torch import save_model

    temp = temp_folder(checkpoints, step)
    rank = acc.process_index
    if acc.is_main_process:
        clean_temp(checkpoints)
        temp.mkdir(parents=True)
    acc.wait_for_everyone()
    error = _attempt(lambda: save_mixed(method.state_dict(), temp, f"method-rank{rank}"))
    error = error or _attempt(lambda: save_mixed(rng_state(generator), temp, f"rng-rank{rank}"))
    _raise_together(acc, error, checkpoints, step, trained, ema, method)

    def shared_files() -> None:
        for name, net in trained.items():
            weights, optimizer, schedule = _files(name)
            save_model(net.module, str(temp / weights))
            fsync_path(temp / weights)
            save_torch(net.optimizer.state_dict(), temp / optimizer)
            write_json(temp / schedule, net.lr_schedule.state_dict())
        if ema is not None:
            student = trained["student"].module
            state = ema.state_dict()
            shadow = {
                name: p
                for (name, _), p in zip(student.named_parameters(), state.pop("shadow_params"), strict=True)
            }
            save_mixed({**state, **shadow}, temp, "ema")
        if recipe_text is not None:
            (temp / RECIPE).write_text(recipe_text)
            fsync_path(temp / RECIPE)
        write_json(temp / "state.json", {"step": step, "world_size": acc.num_processes})  # last: complete

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
    text = _first_line(exc)
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


def load_training_state(
    folder: Path, rank: int, trained: Any, ema: Any, generator, device
) -> tuple[int, dict[str, Any]]:
    """Restore networks, optimisers, schedules, EMA and RNG; return (step, this process's method state).

    The lr schedules continue from the checkpoint's step but with this run's settings: the learning
    rate, warm-up, schedule and total steps of the (possibly changed) recipe take effect.
    """
    from safetensors.torch import load_model

    # state.json first: a step that is not this folder's (a tampered or copied file) is not believed
    state = _read(folder / "state.json", lambda p: json.loads(p.read_text()))
    step = state.get("step") if isinstance(state, dict) else None
    match = _NAME.match(folder.name)
    if type(step) is not int or match is None or step != int(match.group(1)):
        raise UnreadableFile(f"state.json: step {step!r} is not the step of {folder.name}")
    for name, net in trained.items():
        weights, optimizer, schedule = _files(name)
        base_lrs = list(net.lr_schedule.base_lrs)  # this run's lr (the optimiser state holds the old one)
        _read(folder / weights, lambda p, net=net: load_model(net.module, str(p), device=str(device)))
        _read(folder / optimizer, lambda p, net=net: net.optimizer.load_state_dict(load_torch(p, device)))
        _read(
            folder / schedule, lambda p, net=net: net.lr_schedule.load_state_dict(json.loads(p.read_text()))
        )
        _continue_schedule(net.lr_schedule, base_lrs)
    if ema is not None and (folder / "ema.json").exists():

        def load_ema(_: Path) -> None:
            state = load_mixed(folder, "ema")
            names = [name for name, _ in trained["student"].module.named_parameters()]
            state["shadow_params"] = [state.pop(name).to(device) for name in names]
            ema.load_state_dict(state)

        _read(folder / "ema.safetensors", load_ema)

    def load_rng(_: Path) -> None:
        rng = load_mixed(folder, f"rng-rank{rank}")
        torch.set_rng_state(rng["torch"].to(torch.uint8))
        generator.set_state(rng["method"].to(torch.uint8))
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"].to(torch.uint8))

    _read(folder / f"rng-rank{rank}.safetensors", load_rng)
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


class UnreadableFile(Exception):
    """A checkpoint file that cannot be read back (truncated, corrupt): resuming falls back."""


def _read(path: Path, load: Any) -> Any:
    try:
        return load(path)
    except UnreadableFile:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the reader raises, name the file
        raise UnreadableFile(f"{path.name}: {_first_line(exc)}") from exc


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
    candidates = _candidates(checkpoints)
    skipped: list[str] = []
    for folder in candidates:
        saved_world = _saved_world_size(folder)
        if saved_world is not None and saved_world != acc.num_processes:
            raise UserError(
                f"--resume: {folder} was written by {saved_world} processes, this run has {acc.num_processes}; "
                f"resume with {saved_world}"
            )
        try:
            if saved_world is None:
                raise ValueError("state.json: unreadable")
            loaded: tuple[int, dict[str, Any]] | None = load_training_state(
                folder, acc.process_index, trained, ema, generator, device
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
