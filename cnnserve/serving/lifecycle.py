"""Models that change while the server runs: ``model_control_mode`` ``poll`` and ``explicit`` (Triton's names).

Every ``repository_poll_seconds`` each worker reads the cards under ``models_dir`` again and converges on what it
finds, on its own (each worker holds its own sessions, so there is nothing to coordinate):

- a version not seen before is loaded, checked (sha256, the graph against the card) and warmed in a thread
  while the worker goes on serving; only then is it added to the repository, in one step on the event loop, and
  becomes the model's default if it is the highest. A version that is refused never takes traffic: its reason
  shows in ``GET /models`` and the log, and the version before it keeps serving.
- a version the model's ``version_policy`` no longer selects (``latest:1`` and a newer one came) is unloaded the
  same way, but only once a version the policy selects serves: a refused newcomer never leaves the model empty;
- a version whose folder is gone leaves the repository first (no new request can reach it; asked for by number
  it is a 404 naming the versions left), then its batcher answers what it had queued, then its session is freed.

In ``explicit`` mode the same steps follow the models an operator asked for through the repository API
(control.py) instead of everything in the folder: the poller looks at that request every ``EXPLICIT_POLL_S`` and,
when it changed, reads those models' folders and reports back.

A version that serves is read once: to change one, give it a new number. A refused one is tried again when its
files change (a folder still being copied in is refused, then loaded once the copy is whole); copying to a
hidden name and renaming it into place avoids the refusal.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from .config import Settings
from .control import ControlFile
from .core import InferenceCore
from .repository import ModelVersion, Repository, discover

log = logging.getLogger("cnnserve.lifecycle")
EXPLICIT_POLL_S = 0.1


def initial_repository(settings: Settings) -> Repository:
    """What a worker loads at start: in explicit mode only the models ``serve`` names (none if it names none)."""
    if settings.model_control_mode == "explicit" and not settings.serve:
        return Repository(settings.models_dir)
    return discover(settings.models_dir, settings.serve, settings.version_policy_for)


def folder_signature(folder: Path) -> tuple:
    """Names, sizes and modification times of a version folder's files: changes when they do."""
    try:
        return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))
    except OSError:
        return ()


class RepositoryPoller:
    def __init__(self, settings: Settings, core: InferenceCore):
        self.settings = settings
        self.core = core
        self.repository = core.repository
        self.host = core.host
        self.refused: dict[str, tuple] = {}  # version key -> its folder's signature when it was refused

    async def run(self) -> None:
        if self.settings.model_control_mode == "explicit":
            return await self.follow(ControlFile.for_this_server(self.settings.models_dir))
        while True:
            await asyncio.sleep(self.settings.repository_poll_seconds)
            try:
                await self.poll(self.settings.serve)
            except Exception:  # a bad poll is logged; the next one tries again
                log.exception("polling %s failed", self.settings.models_dir)

    async def follow(self, control: ControlFile) -> None:
        """Explicit mode: converge on the models asked for whenever that request changes, and report back."""
        control.start(self.settings.serve)
        applied = None
        while True:
            generation, names = control.wanted()
            if generation != applied:
                try:
                    await self.poll(tuple(names), everything_if_empty=False)
                except Exception:  # the report still goes out: the caller waits for it
                    log.exception("applying the models asked for (%s) failed", ", ".join(names))
                serving = sorted({v.name for v in self.repository.versions()})
                failures = {**self.repository.failures, **self.host.failures}  # cards unread, and versions refused
                refused = {k: r for k, r in failures.items() if k.split("/")[0] in names}
                control.report(self.host.worker_index, generation, serving, refused)
                applied = generation
            await asyncio.sleep(EXPLICIT_POLL_S)

    async def poll(self, names: tuple[str, ...], everything_if_empty: bool = True) -> None:
        """Converge on the versions under ``models_dir`` of ``names`` (every model when empty, unless told not)."""
        if names or everything_if_empty:
            found = await asyncio.to_thread(discover, self.settings.models_dir, names, self.settings.version_policy_for)
        else:
            found = Repository(self.settings.models_dir)
        found_keys = {v.key for v in found.versions()}
        for version in found.versions():
            if version.key in self.host.loaded:
                continue
            if version.key in self.host.failures and self.refused.get(version.key) == folder_signature(version.folder):
                continue
            await self.add(version)
        self.repository.failures.update(found.failures)  # cards that cannot be read, each with its latest reason
        for key in [k for k in self.host.failures if k not in found_keys and k not in found.failures]:
            self.forget(key)  # a refused version whose folder is gone
        for key in [k for k in self.repository.failures if k not in found.failures and k not in self.host.failures]:
            del self.repository.failures[key]  # a card mended, a folder gone, or a model no longer asked for
        for version in list(self.repository.versions()):
            if version.key in found_keys:
                continue
            replacement = [k for k in found_keys if k.split("/")[0] == version.name and k in self.host.loaded]
            if version.name in found.models and version.folder.is_dir() and not replacement:
                continue  # outside the version policy, but kept until a version inside it serves
            await self.remove(version)

    def forget(self, key: str) -> None:
        self.refused.pop(key, None)
        self.repository.failures.pop(key, None)
        self.host.failures.pop(key, None)
        self.host.status = self.host.describe()

    async def add(self, version: ModelVersion) -> None:
        log.info("model %s found in %s: loading", version.key, version.folder)
        signature = folder_signature(version.folder)
        prepared = await asyncio.to_thread(self.host.prepare, version)
        if not self.host.install(version, prepared):
            self.repository.failures[version.key] = self.host.failures[version.key]
            self.refused[version.key] = signature
            return
        self.repository.failures.pop(version.key, None)
        self.core.batch_limits.setdefault(
            version.name, self.settings.batching_for(version.name).max_batch_size if self.settings.batching else 1)
        self.repository.models.setdefault(version.name, {})[version.version] = version
        log.info("model %s serving; %s's default version is now %d", version.key, version.name,
                 max(self.repository.models[version.name]))

    async def remove(self, version: ModelVersion) -> None:
        versions = self.repository.models[version.name]
        del versions[version.version]
        if not versions:
            del self.repository.models[version.name]
        log.info("model %s removed from %s: draining", version.key, self.settings.models_dir)
        await self.host.unload(version, patience_s=self.settings.request_timeout_ms / 1000)
