"""``python -m datasets.synth --root ./data --ids 300 --seed 0``: see ``datasets/synth/cli.py``."""
import sys

from .cli import main

main(sys.argv[1:])
