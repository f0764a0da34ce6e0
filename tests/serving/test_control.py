"""The folder a server's workers share (explicit mode's control file, the core tokens' lock file): one per server,
never inherited from an earlier one, gone when the server stops."""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import psutil

from cnnserve.serving.control import WANTED, ControlFile
from loadtests.local_server import running_server
from tests.serving.helpers import shared_folder_holding


def test_a_server_started_again_with_the_same_arbiter_pid_starts_from_serve_not_from_the_last_run(tmp_path):
    """In a container the arbiter is always process 1 and /tmp may survive a restart: an earlier run's folder (same
    pid, earlier start) must not decide what the new run serves."""
    repository = hashlib.sha256(str(tmp_path.resolve()).encode()).hexdigest()[:12]
    arbiter = psutil.Process(os.getppid())
    earlier = Path(tempfile.gettempdir()) / f"cnnserve-control-{arbiter.pid}-{int(arbiter.create_time()) - 60}-{repository}"
    earlier.mkdir(exist_ok=True)
    (earlier / WANTED).write_text(json.dumps({"generation": 6, "models": ["loaded-by-the-api-last-run"]}))
    control = ControlFile.for_this_server(tmp_path)
    control.start(("resnet18-digits",))
    assert control.wanted() == (0, ["resnet18-digits"])
    for folder in (earlier, control.folder):
        shutil.rmtree(folder)


def test_the_workers_of_one_server_share_one_folder_and_the_first_start_wins(tmp_path):
    first, second = ControlFile.for_this_server(tmp_path), ControlFile.for_this_server(tmp_path)
    assert first.folder == second.folder
    first.start(("a",))
    first.ask(lambda names: names | {"b"})
    second.start(("a",))  # a worker starting later (or replaced) keeps what the API asked for
    assert second.wanted() == (1, ["a", "b"])
    shutil.rmtree(first.folder)


def test_a_stopped_server_leaves_no_folder_behind(repo_copy, tmp_path):
    """Every start made one in the temp dir (explicit mode's control file, the core tokens' lock file), and none
    went."""
    repo_copy("lenet5-digits")
    with running_server(tmp_path, models_dir=str(repo_copy.root), workers="2", threads="1", model_control_mode="explicit",
                        serve="lenet5-digits") as server:
        folder = shared_folder_holding(server, repo_copy.root, {WANTED, "cores.lock"})
    assert not folder.exists()
