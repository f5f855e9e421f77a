"""The multi-seed launcher behind ``run_phased_loss.py`` (see its docstring for the behaviour).

- ``launcher.toggles``: the toggles (--phased, --no-supcon, ...) as config overlays.
- ``launcher.experiment``: what one command trains and tests: names, folders, options, run lock.
- ``launcher.identity``: what a run folder holds (its training config) and what of it may be
  reused (refused when stale; test results only of the checkpoint as it is now).
- ``launcher.runner``: one seed: train.py / test.py subprocesses, logs, resume probe, dry run.
- ``launcher.report``: best/last selection, statistics across seeds, comparison, Markdown/CSV.
- ``launcher.cli``: the command line.
- ``launcher.ablation``: ablation benches as lists of conditions run through the launcher.
"""
