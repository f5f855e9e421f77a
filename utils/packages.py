"""Imports of optional-at-import-time packages, with one clear error when one is missing.

open_clip is a dependency of PhaseReID (requirements.txt), but only the parts that use it
(captions, the TG-MIM text encoder, CLIP fusion, open_clip weight tags) import it, so the rest of
the code base works without it. They all import it through :func:`import_open_clip`. The same
holds for peft, which only LoRA (MODEL.TBPS.LORA.ENABLE; model/lora.py) imports, through
:func:`import_peft`.
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


#: the peft release LoRA is tested with (requirements.txt pins it)
PEFT_PIN = "peft==0.21.2"


def import_peft(purpose: str):
    """The ``peft`` module, or an ImportError that says who needs it and how to install it.

    Args:
        purpose: what needs peft, the start of the message (e.g. "MODEL.TBPS.LORA.ENABLE True").

    Raises:
        ImportError: "<purpose> needs the peft package: pip install peft==0.21.2" (the original
            import error is chained as its cause).

    Example:
        >>> peft = import_peft("MODEL.TBPS.LORA.ENABLE True")
    """
    try:
        import peft
    except ImportError as exc:
        raise ImportError(f"{purpose} needs the peft package: pip install {PEFT_PIN}") from exc
    return peft
