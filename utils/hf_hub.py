"""Hugging Face ``from_pretrained`` from a local folder or a hub id, with one clear error.

A config key (e.g. MODEL.TBPS.HF_MODEL) names either a local folder written by
``save_pretrained`` (or ``hf download <id> --local-dir DIR``) or a hub id such as
``google/siglip-base-patch16-256-multilingual``:

- an existing folder is read with ``local_files_only=True`` (nothing is downloaded);
- a value that reads as a path (``configs.validate.is_local_path``: starts with '/', '.', '~',
  names more than one folder, ...) but is not a folder is an error before anything is tried;
- anything else is a hub id: ``from_pretrained(id)`` (the Hugging Face cache, else a download).

When loading fails (no internet and not cached, a missing file, a missing tokenizer package) the
error names the key, the value and how to provide the files. The model and its tokenizer are
loaded through here with the same key, so both come from the same folder.
"""
from __future__ import annotations

import importlib.util
import os

from configs.validate import is_local_path


def hf_from_pretrained(factory, source: str, key: str, what: str, **kwargs):
    """``factory.from_pretrained(source, **kwargs)`` with the rules of the module docstring.

    Args:
        factory: a class with ``from_pretrained`` (``SiglipModel``, ``AutoTokenizer``,
            ``AutoConfig``, ...).
        source: a local folder or a hub id (the value of ``key``).
        key: the config key that names ``source`` (named in errors).
        what: what is loaded ('model weights', 'tokenizer', 'config'), for errors.

    Raises:
        FileNotFoundError: ``source`` reads as a path but is not a folder.
        OSError: loading failed; the message names ``key`` and how to provide the files.

    Example:
        >>> tok = hf_from_pretrained(AutoTokenizer, "models/msiglip", "MODEL.TBPS.HF_MODEL",
        ...                          "tokenizer")
    """
    path = os.path.expanduser(source)
    is_dir = os.path.isdir(path)
    if not is_dir and is_local_path(source):
        raise FileNotFoundError(
            f"{key} '{source}' is not a folder. Give a local folder holding the Hugging Face "
            f"model files (config.json, the weights, the tokenizer files) or a hub id such as "
            "'google/siglip-base-patch16-256-multilingual'")
    try:
        return factory.from_pretrained(path if is_dir else source,
                                       **({"local_files_only": True} if is_dir else {}), **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = ""
        if what == "tokenizer" and importlib.util.find_spec("sentencepiece") is None:
            hint = (" SigLIP's tokenizer is a sentencepiece model: install the sentencepiece "
                    "package (pip install sentencepiece; requirements.txt pins it).")
        where = (f"the folder '{source}' does not hold a loadable {what}" if is_dir else
                 f"'{source}' is not a local folder and the hub could not provide it (offline, "
                 "or not in the Hugging Face cache)")
        raise OSError(
            f"{key}: cannot load the {what} ({type(exc).__name__}: {first}); {where}.{hint} "
            "Download the model folder once on a machine with internet (e.g. hf download "
            f"{source if not is_dir else '<hub id>'} --local-dir DIR, or "
            "from_pretrained(<hub id>).save_pretrained(DIR) for the model and for its tokenizer), "
            f"copy DIR here and set {key} to DIR") from exc
