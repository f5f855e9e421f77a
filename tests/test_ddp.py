"""DDP through torchrun: 2 CPU processes with the gloo backend train and checkpoint."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, tiny_opts
from utils.checkpoint import load_checkpoint


@pytest.mark.slow
def test_torchrun_two_processes_gloo(synth_root, tmp_path):
    out = str(tmp_path / "ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(ROOT, "train.py")] + tiny_opts(
        synth_root, out, **{"MODEL.DIST_TRAIN": True, "SOLVER.MAX_EPOCHS": 2,
                            "SOLVER.IMS_PER_BATCH": 16, "SOLVER.EVAL_PERIOD": 2,
                            # phase A leaves the SupCon head unused: DDP must tolerate that
                            "LOSS.SUPCON.ENABLE": True, "LOSS.SUPCON.PROJ_HIDDEN": 16,
                            "LOSS.SUPCON.PROJ_DIM": 8, "LOSS.PHASED.ENABLE": True,
                            "LOSS.PHASED.BOUNDARIES": "[1]",
                            "LOSS.PHASED.METRIC_SEQ": "['triplet', 'triplet']",
                            "LOSS.PHASED.W_METRIC_SEQ": "[1.0, 1.0]",
                            "LOSS.PHASED.W_SUP_SPEC": "['const:0.0', 'const:0.3']"})
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = open(os.path.join(out, "train_log.txt")).read()
    assert log.count("Epoch 1/2 | phase A") == 1  # rank 0 logs, rank 1 does not
    assert "Epoch 2/2 | phase B" in log and " supcon " in log
    assert "mAP" in log
    ckpt = load_checkpoint(os.path.join(out, "transformer_2.pth"))
    assert not any(k.startswith("module.") for k in ckpt["model"])  # saved unwrapped
    assert all(torch.isfinite(v.float()).all() for v in ckpt["model"].values())
