"""Tidy failure: temporaries of killed writers are removed by the next run in their folder (never
a live writer's), and atomically written files get the usual permissions."""
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
import torch.nn as nn

from configs import load_config
from datasets.synth import load_synth
from utils import atomic
from utils import checkpoint as ck
from utils.run_files import checkpoint_path

DAY_AND_A_BIT = 24 * 3600 + 60   # older than utils.tempfiles.STALE_AFTER_SECONDS


def owner_tag() -> str:
    from utils.tempfiles import owner_tag as this_process
    return this_process()


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def tag(pid: int, host: str = None) -> str:
    return f"{pid}@{host or owner_tag().split('@', 1)[1]}"


def touch(path, age_s: float = 0.0, size: int = 16):
    with open(path, "wb") as f:
        f.write(b"\0" * size)
    if age_s:
        past = time.time() - age_s
        os.utime(path, (past, past))
    return str(path)


class _Sched:
    def state_dict(self):
        return {"last_epoch": 1}


def test_next_resume_save_removes_temporaries_of_dead_writers_only(tmp_path):
    dead = touch(tmp_path / f".tmp-{tag(dead_pid())}-abcd_123.pth", size=4096)
    live = touch(tmp_path / f".tmp-{tag(os.getpid())}-efgh4567.pth")
    old_nameless = touch(tmp_path / ".tmp-k2j4h5g6.pth", age_s=DAY_AND_A_BIT)
    fresh_nameless = touch(tmp_path / ".tmp-q9w8e7r6.pth")
    other_host_fresh = touch(tmp_path / f".tmp-{tag(dead_pid(), 'elsewhere')}-zzzz0000.pth")
    unrelated = touch(tmp_path / ".tmp-notes.txt", age_s=DAY_AND_A_BIT)

    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ck.save_resume_state(str(tmp_path), 1, model, {"model": opt}, _Sched(), None,
                         config=load_config().dump())

    assert not os.path.exists(dead) and not os.path.exists(old_nameless)
    for kept in (live, fresh_nameless, other_host_fresh, unrelated):
        assert os.path.exists(kept), kept
    assert ck.load_resume_state(str(tmp_path))["epoch"] == 1
    # the writer's own temporary is gone after the rename; its name carries its owner
    assert not [n for n in os.listdir(tmp_path) if n.startswith(f".tmp-{owner_tag()}")
                and n != os.path.basename(live)]


def test_writer_temporary_names_its_owner(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", spy)
    atomic.atomic_write_text(str(tmp_path / "config.yaml"), "a: 1\n")
    assert len(seen) == 1 and seen[0].startswith(f".tmp-{owner_tag()}-")
    assert atomic.TEMP_RE.match(seen[0]).group("owner") == owner_tag()


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_permissions_of_a_plain_file(tmp_path, umask, expected):
    cfg = load_config()
    previous = os.umask(umask)
    try:
        path = checkpoint_path(str(tmp_path), 1)
        ck.save_checkpoint(path, nn.Linear(3, 2), cfg, 1, 2, 1, 1)
        text = str(tmp_path / "summary.json")
        atomic.atomic_write_text(text, "{}")
    finally:
        os.umask(previous)
    assert os.stat(path).st_mode & 0o777 == expected
    assert os.stat(text).st_mode & 0o777 == expected


def test_next_generation_removes_folders_of_killed_synth_generations(synth_root):
    name = "synthpedes_ids14_train8_seed0_64x32"
    killed = os.path.join(synth_root, f".{name}.tmp-{tag(dead_pid())}")
    running = os.path.join(synth_root, f".{name}.tmp-{tag(os.getpid())}")
    for folder in (killed, running):
        os.makedirs(os.path.join(folder, "bounding_box_train"))
        touch(os.path.join(folder, "bounding_box_train", "0001_c1s1_000001_01.jpg"))
    try:
        # the same dataset again: it exists, and the root is cleaned on the way
        load_synth(synth_root, num_train_ids=8, num_test_ids=6, seed=0, image_size=(64, 32))
        assert not os.path.exists(killed)
        assert os.path.isdir(running)   # a live generation's folder is never touched
    finally:
        shutil.rmtree(running, ignore_errors=True)
        shutil.rmtree(killed, ignore_errors=True)
