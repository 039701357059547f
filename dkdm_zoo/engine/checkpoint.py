"""Atomic checkpoints: every file is written into a temp folder beside the final one, fsynced, then
the folder is renamed into place and the ``latest`` pointer is updated last. A kill at any moment
leaves the previous checkpoint loadable; stray temp folders are ignored and cleaned up.

Tensors go to safetensors, small values to JSON; only the optimiser state uses torch.save, and it
is read back with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

LATEST = "latest"
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
    state: dict[str, Any] = json.loads((folder / f"{stem}.json").read_text())
    state.update(load_file(str(folder / f"{stem}.safetensors")))
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
    acc: Any, checkpoints: Path, step: int, trained: Any, ema: Any, method: Any, generator, keep: int
) -> Path | None:
    """Write checkpoint ``step`` atomically (collective: every process calls it).

    ``trained`` maps network names to objects with ``module``, ``optimizer`` and ``lr_schedule``.
    Each process writes its method state and RNG; the main process writes the shared rest.
    """
    from safetensors.torch import save_model

    temp = temp_folder(checkpoints, step)
    rank = acc.process_index
    if acc.is_main_process:
        clean_temp(checkpoints)
        temp.mkdir(parents=True)
    acc.wait_for_everyone()
    save_mixed(method.state_dict(), temp, f"method-rank{rank}")
    save_mixed(rng_state(generator), temp, f"rng-rank{rank}")
    acc.wait_for_everyone()
    final = None
    if acc.is_main_process:
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
        write_json(temp / "state.json", {"step": step, "world_size": acc.num_processes})  # last: complete
        final = publish(temp, checkpoints, step, keep)
    acc.wait_for_everyone()
    return final


def load_training_state(
    folder: Path, rank: int, trained: Any, ema: Any, generator, device
) -> tuple[int, dict[str, Any]]:
    """Restore networks, optimisers, schedules, EMA and RNG; return (step, this process's method state)."""
    from safetensors.torch import load_model

    for name, net in trained.items():
        weights, optimizer, schedule = _files(name)
        load_model(net.module, str(folder / weights), device=str(device))
        net.optimizer.load_state_dict(load_torch(folder / optimizer, device))
        net.lr_schedule.load_state_dict(json.loads((folder / schedule).read_text()))
    if ema is not None and (folder / "ema.json").exists():
        state = load_mixed(folder, "ema")
        names = [name for name, _ in trained["student"].module.named_parameters()]
        state["shadow_params"] = [state.pop(name).to(device) for name in names]
        ema.load_state_dict(state)
    rng = load_mixed(folder, f"rng-rank{rank}")
    torch.set_rng_state(rng["torch"].to(torch.uint8))
    generator.set_state(rng["method"].to(torch.uint8))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"].to(torch.uint8))
    step = int(json.loads((folder / "state.json").read_text())["step"])
    return step, load_mixed(folder, f"method-rank{rank}")
