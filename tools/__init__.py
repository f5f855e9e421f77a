"""Command-line tools on top of run folders (python -m tools.<name>)."""
