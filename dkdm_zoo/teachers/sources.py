"""Where a teacher's files are: a local folder, a hub repository, or a snapshot in the Hugging Face cache.

Torch-free, so the CLI can tell a folder's family before importing any model code.

- A local folder is read as it is.
- A hub id with ``HF_HUB_OFFLINE=1`` (or ``local_files_only``) is the snapshot that
  ``refs/main`` names in ``HF_HUB_CACHE`` (default ``$HF_HOME/hub``), read as a local folder: a file
  the snapshot lacks is simply missing, and only a repository with no snapshot at all is "not in
  the cache".
- A hub id online is listed once (one request) and its files are fetched on demand; when the hub
  cannot be reached, a cached snapshot is used instead, and without one the error says so.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dkdm_zoo.errors import UserError

# "org/name" as the hub spells repository ids; a single bare word is treated as a local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def offline(local_files_only: bool | None = None) -> bool:
    from huggingface_hub import constants

    return bool(local_files_only) or bool(constants.HF_HUB_OFFLINE)


def is_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not looks_local(text)


def looks_local(text: str) -> bool:
    """A value meant as a local path: ./ ../ / ~ in front, a backslash, or a first component that
    is a folder here ("runs/typo" with runs/ present). A misspelled one is then reported at once,
    not looked up on the hub (a dozen retries, half a minute, then advice to download)."""
    if text.startswith(("/", ".", "~")) or "\\" in text:
        return True
    first = text.split("/", 1)[0]
    return "/" in text and Path(first).is_dir()


def missing_path_error(text: str, what: str) -> UserError:
    """``text`` (a local path) does not exist: say which part does, so the typo is easy to find."""
    path = Path(text).expanduser()
    parent = next((p for p in path.parents if p.is_dir()), None)
    if parent is None:
        where = "no part of it exists"
    else:
        folder = "the working folder" if str(parent) == "." else f"{parent}/"
        where = f"{folder} exists, {path.relative_to(parent)} does not"
    return UserError(f"{what} {text} does not exist ({where}): check the spelling")


@dataclass(frozen=True)
class Source:
    """A teacher's files: a folder (``location`` is its path) or a hub repository (``location`` is its id).

    ``repo_id`` names the hub repository a cached snapshot folder came from; ``files`` is an online
    repository's listing.
    """

    location: str
    is_hub: bool
    local_files_only: bool | None = None
    repo_id: str | None = None
    files: frozenset[str] | None = None

    def __str__(self) -> str:
        if self.repo_id is not None and not self.is_hub:
            return f"{self.repo_id} (cached snapshot {self.location})"
        return self.location

    @property
    def name(self) -> str:
        """What the user typed: the hub id, or the folder."""
        return self.repo_id or self.location

    def where(self, subfolder: str | None = None) -> str:
        """The folder searched, as a user can find it: a path, or a folder of a hub repository."""
        if self.is_hub:
            return f"{subfolder or '.'}/ of hub repository {self.location}"
        return str(Path(self.location) / subfolder) if subfolder else self.location

    def listdir(self, subfolder: str | None = None) -> list[str]:
        """File names directly inside ``subfolder`` (the root when None)."""
        if self.is_hub:
            prefix = f"{subfolder.strip('/')}/" if subfolder else ""
            return sorted(
                f[len(prefix) :]
                for f in self.files or ()
                if f.startswith(prefix) and "/" not in f[len(prefix) :]
            )
        folder = Path(self.location) / (subfolder or "")
        return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []

    def fetch(self, filename: str, subfolder: str | None = None) -> Path | None:
        """The local path of ``subfolder/filename``, or None if the folder or repository has no such file."""
        rel = f"{subfolder}/{filename}" if subfolder else filename
        if not self.is_hub:
            path = Path(self.location) / rel
            return path if path.is_file() else None
        if rel not in (self.files or ()):
            return None
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(self.location, rel))
        except Exception as exc:  # noqa: BLE001 - any failure to download (network, auth, disk)
            raise UserError(
                f"cannot download {rel} from hub repository {self.location}: {_first_line(exc)}; "
                "retry, or download the repository where there is internet (`hf download "
                f"{self.location}`) and set HF_HUB_OFFLINE=1"
            ) from exc


def resolve_source(path: str | os.PathLike[str] | None, local_files_only: bool | None = None) -> Source:
    """A local folder if ``path`` exists, else a hub id (cached snapshot offline, listed online), else a UserError."""
    if path is None or str(path).strip() == "":
        raise UserError(
            "the teacher needs a path: a local diffusers folder or a hub id like google/ddpm-cifar10-32"
        )
    text = str(path)
    local = Path(text).expanduser()
    if local.exists():
        if not local.is_dir():
            raise UserError(f"teacher path {text} is a file: pass the diffusers folder that contains it")
        return Source(str(local.resolve()), is_hub=False, local_files_only=local_files_only)
    if is_hub_id(text):
        from huggingface_hub import constants

        return _hub_source(text, offline(local_files_only), str(constants.HF_HUB_CACHE))
    if looks_local(text):
        raise missing_path_error(text, "teacher path")
    raise UserError(
        f"teacher path {text} does not exist and is not a hub id (org/name): "
        "pass an existing diffusers folder or a hub id like google/ddpm-cifar10-32"
    )


@functools.lru_cache(maxsize=32)
def _hub_source(repo_id: str, is_offline: bool, cache_dir: str) -> Source:
    """One lookup per repository and process: detection and loading share it."""
    if is_offline:
        snapshot = cached_snapshot(repo_id, cache_dir)
        if snapshot is None:
            raise not_cached_error(repo_id, cache_dir, "HF_HUB_OFFLINE=1 / local_files_only")
        return Source(str(snapshot), is_hub=False, local_files_only=True, repo_id=repo_id)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        files = frozenset(HfApi().list_repo_files(repo_id))
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise UserError(
            f"hub repository '{repo_id}' not found (or gated/private): check the id, "
            "log in with `hf auth login`, or pass a local diffusers folder"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - the hub cannot be reached (DNS, proxy, timeouts)
        snapshot = cached_snapshot(repo_id, cache_dir)
        if snapshot is None:
            raise not_cached_error(
                repo_id, cache_dir, f"the hub cannot be reached: {_first_line(exc)}"
            ) from exc
        return Source(str(snapshot), is_hub=False, local_files_only=True, repo_id=repo_id)
    return Source(repo_id, is_hub=True, files=files)


def cached_snapshot(repo_id: str, cache_dir: str) -> Path | None:
    """The snapshot folder ``refs/main`` points at in ``cache_dir``, or None when the repository is not cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def not_cached_error(repo_id: str, cache_dir: str, why: str) -> UserError:
    return UserError(
        f"hub model '{repo_id}' is not in the local Hugging Face cache ({cache_dir}) and cannot be "
        f"downloaded ({why}): download it where there is internet (`hf download {repo_id}`), point "
        "HF_HUB_CACHE / HF_HOME at the cache that holds it, or pass a local diffusers folder"
    )


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {_first_line(exc)}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path} does not hold a JSON object")
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
