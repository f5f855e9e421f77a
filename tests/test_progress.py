"""Progress display (issue 13 item 13): plain lines, no carriage returns, when stderr is not a
terminal."""
import io
import os
import subprocess
import sys

import pytest

from conftest import ROOT, tiny_opts

# utils.progress is imported inside the unit tests, so that on code without it the end-to-end
# test still runs and fails on what it checks


def test_plain_lines_at_each_quarter_with_the_postfix():
    from utils.progress import PlainProgress
    stream = io.StringIO()
    bar = PlainProgress(range(100), "epoch 3/30", 100, False, stream=stream)
    for i in bar:
        bar.set_postfix(loss=f"{i / 10:.3f}")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in stream.getvalue()
    assert [line.split("  ")[1] for line in lines] == [
        "25/100 batches", "50/100 batches", "75/100 batches", "100/100 batches"]
    assert lines[-1].startswith("epoch 3/30  100/100 batches  loss 9.900  ")
    assert lines[-1].endswith(" s") and " it/s" in lines[-1]


def test_plain_lines_for_short_loops_unknown_lengths_and_disabled_bars():
    from utils.progress import PlainProgress
    stream = io.StringIO()
    list(PlainProgress(range(2), "features", 2, False, stream=stream))
    assert [line.split("  ")[1] for line in stream.getvalue().splitlines()] == [
        "1/2 batches", "2/2 batches"]
    stream = io.StringIO()
    list(PlainProgress(iter(range(7)), "features", None, False, stream=stream))
    assert [line.split("  ")[1] for line in stream.getvalue().splitlines()] == ["7 batches"]
    stream = io.StringIO()
    assert list(PlainProgress(range(5), "x", 5, True, stream=stream)) == list(range(5))
    assert stream.getvalue() == ""


def test_a_line_at_least_every_interval(monkeypatch):
    import utils.progress as progress_mod
    from utils.progress import PlainProgress
    clock = iter(range(0, 10_000, 20))   # 20 s per item
    monkeypatch.setattr(progress_mod.time, "time", lambda: next(clock))
    stream = io.StringIO()
    list(PlainProgress(range(100), "epoch 1/1", 100, False, stream=stream))
    counts = [int(line.split("  ")[1].split("/")[0]) for line in stream.getvalue().splitlines()]
    assert {25, 50, 75, 100} <= set(counts)
    # never more than 2 items (40 s) without a line, and not a line per item
    assert max(b - a for a, b in zip([0] + counts, counts)) == 2 and len(counts) < 60


def test_progress_picks_tqdm_only_on_a_terminal(monkeypatch):
    from utils.progress import PlainProgress, progress
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(progress(range(3), "x"), PlainProgress)
    monkeypatch.setattr(sys, "stderr", Tty())
    assert not isinstance(progress(range(3), "x"), PlainProgress)


@pytest.mark.slow
def test_redirected_training_log_has_no_carriage_returns(synth_root, tmp_path):
    out = str(tmp_path / "run")
    err_path = tmp_path / "stderr.txt"
    cmd = [sys.executable, os.path.join(ROOT, "train.py")] + tiny_opts(
        synth_root, out, **{"SOLVER.MAX_EPOCHS": 1, "SOLVER.EVAL_PERIOD": 1})
    with open(err_path, "w") as err:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, timeout=600,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
    text = err_path.read_bytes().decode("utf-8")   # bytes: read_text() would turn \r into \n
    assert proc.returncode == 0, text[-3000:]
    assert "\r" not in text
    lines = text.splitlines()
    assert any(line.startswith("epoch 1/1  ") and " batches  loss " in line for line in lines)
    assert any(line.startswith("features  ") for line in lines)   # the evaluation's extraction
    assert len(lines) <= 20, text
