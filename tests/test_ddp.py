"""DDP through torchrun: 2 CPU processes with the gloo backend train and checkpoint; a stuck
process stops the job after MODEL.DIST_TIMEOUT_S."""
import os
import subprocess
import sys
import time

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


@pytest.mark.slow
def test_torchrun_two_processes_gloo_text_based_person_search(synth_root, tmp_path):
    """MODEL.TASK 'tbps' under DDP: N-ITC + R-ITC with negatives gathered from both processes
    (LOSS.*.GATHER, the gradient-correct all-gather), the stop-gradient second forward, and the
    in-training text-to-image evaluation on the val split, on rank 0."""
    out = str(tmp_path / "ddp_tbps")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(ROOT, "train.py")] + tiny_opts(
        synth_root, out, **{"MODEL.DIST_TRAIN": True, "SOLVER.MAX_EPOCHS": 1,
                            "SOLVER.IMS_PER_BATCH": 16, "SOLVER.EVAL_PERIOD": 1,
                            "MODEL.TASK": "tbps", "MODEL.TBPS.TINY": True,
                            "MODEL.TBPS.PRETRAINED": "", "MODEL.TBPS.EMBED_DIM": 32,
                            "MODEL.SIE_CAMERA": False, "DATASETS.CAPTION_SOURCE": "annotation",
                            "DATASETS.SYNTH_VAL_IDS": 2, "LOSS.NAMES": "['nitc', 'ritc']",
                            "LOSS.NITC.GATHER": True, "LOSS.RITC.GATHER": True})
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = open(os.path.join(out, "train_log.txt")).read()
    assert log.count("Epoch 1/1 | phase A") == 1 and " nitc " in log and " ritc " in log
    assert "Text-to-image" in log and "val" in log
    ckpt = load_checkpoint(os.path.join(out, "transformer_1.pth"))
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert all(torch.isfinite(v.float()).all() for v in ckpt["model"].values())


STUCK_RANK = """import sys, time
sys.path.insert(0, {root!r})
import torch
import torch.distributed as dist
from configs import load_config
from utils.dist import init_distributed
cfg = load_config(opts=["MODEL.DIST_TRAIN", "True", "MODEL.DEVICE", "cpu",
                        "MODEL.DIST_TIMEOUT_S", "5"])
rank = init_distributed(cfg)
if rank == 1:
    time.sleep(300)   # stuck: never reaches the collective
start = time.time()
try:
    dist.all_reduce(torch.ones(1))
except Exception:
    print(f"collective failed after {{time.time() - start:.1f}} s", flush=True)
    raise
"""


@pytest.mark.slow
def test_a_stuck_rank_stops_the_job_after_the_timeout(tmp_path):
    script = tmp_path / "stuck_rank.py"
    script.write_text(STUCK_RANK.format(root=ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script)]
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=240)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    waited = float(output.split("collective failed after ")[1].split(" s")[0])
    assert 4 <= waited < 30, output[-3000:]   # MODEL.DIST_TIMEOUT_S 5, not torch's 30 minutes
    assert time.time() - start < 180          # torchrun stopped the stuck process too
    assert "timed out" in output.lower() or "timeout" in output.lower()


def test_timeout_hint_names_the_key():
    from configs import load_config
    from utils.dist import timeout_hint
    cfg = load_config(opts=["MODEL.DIST_TRAIN", "True", "MODEL.DIST_TIMEOUT_S", "5"])
    line = timeout_hint(cfg)(RuntimeError("Timed out waiting 5000ms for recv operation"))
    assert "MODEL.DIST_TIMEOUT_S = 5 s" in line
    assert timeout_hint(cfg)(RuntimeError("CUDA out of memory")) is None
