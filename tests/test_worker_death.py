"""DataLoader workers die with the process that started them (Linux PR_SET_PDEATHSIG through
the loaders' ``worker_init_fn``): a trainer killed mid-epoch leaves no worker behind, even one
busy in ``__getitem__`` (where torch's own parent watchdog never looks)."""
import glob
import os
import subprocess
import sys
import textwrap

import pytest

from configs import load_config
from conftest import ROOT, tiny_opts
from datasets.make_dataloader import _init_worker, build_train_loader, make_dataloader
from test_launcher_signals import gone

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="PR_SET_PDEATHSIG is Linux only")

TRAINER = """
import glob, os, signal, sys, time
sys.path.insert(0, {root!r})
from torch.utils.data import DataLoader, Dataset
from datasets.make_dataloader import worker_init

marker = {marker!r}

class Busy(Dataset):
    def __len__(self):
        return 8
    def __getitem__(self, i):
        open(marker + "." + str(os.getpid()), "w").close()
        time.sleep(120)
        return i

loader = DataLoader(Busy(), batch_size=1, num_workers=2, worker_init_fn=worker_init())
iterator = iter(loader)
deadline = time.time() + 60
while len(glob.glob(marker + ".*")) < 2 and time.time() < deadline:
    time.sleep(0.05)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_workers_die_with_a_killed_trainer(tmp_path):
    marker = str(tmp_path / "worker")
    script = tmp_path / "trainer.py"
    script.write_text(textwrap.dedent(TRAINER.format(root=ROOT, marker=marker)))
    proc = subprocess.run([sys.executable, str(script)], timeout=120)
    assert proc.returncode == -9
    workers = [int(p.rsplit(".", 1)[1]) for p in glob.glob(marker + ".*")]
    assert len(workers) == 2
    try:
        assert all(gone(pid, seconds=10.0) for pid in workers), \
            "a DataLoader worker outlived its killed trainer"
    finally:
        for pid in workers:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def test_the_trainers_loaders_use_the_worker_init(synth_root, tmp_path):
    cfg = load_config(opts=tiny_opts(synth_root, str(tmp_path)))
    data = make_dataloader(cfg)
    for loader in (data.test_loader, build_train_loader(cfg, data.train_set, 4)):
        assert loader.worker_init_fn.func is _init_worker
        assert loader.worker_init_fn.args == (os.getpid(),)
