"""Imports of optional-at-import-time packages, with one clear error when one is missing.

open_clip is a dependency of PhaseReID (requirements.txt), but only the parts that use it
(captions, the TG-MIM text encoder, CLIP fusion, open_clip weight tags) import it, so the rest of
the code base works without it. They all import it through :func:`import_open_clip`.
"""
from __future__ import annotations


def import_open_clip(purpose: str):
    """The ``open_clip`` module, or an ImportError that says who needs it and how to install it.

    Args:
        purpose: what needs open_clip, the start of the message (e.g. "MODEL.CLIP_IMPL
            'open_clip'").

    Raises:
        ImportError: "<purpose> needs the open_clip package: pip install open-clip-torch"
            (the original import error is chained as its cause).

    Example:
        >>> open_clip = import_open_clip("captions")
    """
    try:
        import open_clip
    except ImportError as exc:
        raise ImportError(f"{purpose} needs the open_clip package: pip install "
                          "open-clip-torch") from exc
    return open_clip
