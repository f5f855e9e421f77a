"""Errors at load time, before any work (issue 13, items 4 and 6): a config value typo, a missing
weight path, and config files that are not YAML (a config is data, never executed). The rule
table itself: tests/test_config_validate.py."""
import os
import subprocess
import sys

import pytest

import train as train_script
from conftest import tiny_opts
from configs import load_config
from configs.defaults import get_cfg_defaults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_distance_typo_fails_at_load_before_any_work(synth_root, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError) as err:
        train_script.main(tiny_opts(synth_root, str(out), **{"TEST.DISTANCE": "cosin",
                                                             "SOLVER.MAX_EPOCHS": 1}))
    msg = str(err.value)
    assert "TEST.DISTANCE 'cosin' is not one of" in msg and "['euclidean', 'cosine']" in msg
    assert not out.exists()   # nothing trained, nothing written


def test_pretrain_path_must_exist_when_read(tmp_path):
    missing = str(tmp_path / "vit.pth")
    with pytest.raises(ValueError, match="MODEL.PRETRAIN_PATH .*vit.pth' does not exist"):
        load_config(opts=["MODEL.PRETRAIN_CHOICE", "imagenet", "MODEL.PRETRAIN_PATH", missing])
    with pytest.raises(ValueError, match="MODEL.PRETRAIN_PATH is empty but .*'self'"):
        load_config(opts=["MODEL.PRETRAIN_CHOICE", "self"])
    # a timm hub tag is not a path; PRETRAIN_CHOICE 'none' reads no path
    load_config(opts=["MODEL.PRETRAIN_CHOICE", "imagenet",
                      "MODEL.PRETRAIN_PATH", "timm:vit_base_patch16_224.augreg2_in21k_ft_in1k"])
    load_config(opts=["MODEL.PRETRAIN_PATH", missing])
    # a stored config (a finished run, maybe another machine) is not path-checked
    stored = get_cfg_defaults()
    stored.MODEL.PRETRAIN_CHOICE, stored.MODEL.PRETRAIN_PATH = "imagenet", missing
    assert load_config(config_text=stored.dump()).MODEL.PRETRAIN_PATH == missing
    (tmp_path / "vit.pth").write_bytes(b"")
    load_config(opts=["MODEL.PRETRAIN_CHOICE", "imagenet", "MODEL.PRETRAIN_PATH", missing])


# ----------------------------------------------------------------------- configs are data
PY_CONFIG = "import os\nos.system('touch {marker}')\nopen({marker!r}, 'w').write('ran')\n"


def _py_config(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.py"
    path.write_text(PY_CONFIG.format(marker=str(marker)))
    return str(path), marker


def test_a_py_config_is_refused_and_never_run(tmp_path):
    path, marker = _py_config(tmp_path)
    with pytest.raises(ValueError, match=r"evil.py is not a YAML file: only YAML"):
        load_config(path)
    with pytest.raises(ValueError, match="only YAML"):
        train_script.main(["--config_file", path, "OUTPUT_DIR", str(tmp_path / "run")])
    import torch

    import test as test_script
    weight = str(tmp_path / "w.pth")
    torch.save({"model": {}, "meta": {}}, weight)
    with pytest.raises(ValueError, match="only YAML"):
        test_script.resolve_config(test_script.parse_args(
            ["--config_file", path, "TEST.WEIGHT", weight]))
    assert not marker.exists()


def test_a_py_base_is_refused_and_never_run(tmp_path):
    path, marker = _py_config(tmp_path)
    child = tmp_path / "child.yml"
    child.write_text("_BASE_: evil.py\nSOLVER:\n  MAX_EPOCHS: 2\n")
    with pytest.raises(ValueError, match=r"child.yml: its _BASE_ .*evil.py is not a YAML file"):
        load_config(str(child))
    assert not marker.exists()


def test_the_launcher_refuses_a_py_config(tmp_path):
    path, marker = _py_config(tmp_path)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "run_phased_loss.py"), "--config",
                           path, "--dry-run", "--output-root", str(tmp_path / "runs")],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert proc.returncode != 0
    assert "only YAML" in proc.stderr
    assert not marker.exists()
