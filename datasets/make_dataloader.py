"""From a config to data: the dataset, the batch dict contract, train and test loaders.

A batch (DESIGN.md section 2) is a dict: ``img`` (B,3,H,W), ``pid``, ``camid``, ``viewid``,
``path`` (list of str), ``brightness`` (mean BT.709 luma of the augmented crop in [0,1]) and
``index`` (position in the split). Nothing downstream unpacks positional tuples.

MODEL.TASK 'tbps': the training items are the (image, caption) pairs of the training images, one
per caption (:func:`caption_pairs`, as IRRA), sampled by the P x K sampler over the pairs' identities
or at random (DATALOADER.SAMPLER); each carries its own caption. Otherwise, with captions, one item
per image, with one of its captions drawn per epoch (below).

With captions (DATASETS.CAPTION_SOURCE != 'none', ``datasets/captions.py``) TRAINING batches also
carry ``caption`` (list of str, one per image), ``text_ids`` (B, L) int64 and ``text_mask``
(B, L) bool (True on real tokens incl. start / end of text), L = MODEL.TEXT.CONTEXT_LENGTH
(``datasets/tokenize.py``). Test batches carry no text.

Every random choice of a training item is seeded by (SOLVER.SEED, epoch, item index), so it
depends on neither the batch order, the worker nor DATALOADER.NUM_WORKERS, and the same config
gives the same weights for any worker count:

- augmentation (flip, crop, random erasing): the pipeline draws only from a ``torch.Generator``
  seeded with ``augment_seed(SOLVER.SEED, e, index)`` (``datasets/transforms.py``); the
  brightness is measured on the result;
- the caption: one per image per epoch, item ``index`` of epoch ``e`` uses caption
  ``numpy.random.default_rng([SOLVER.SEED, e, index]).integers(len(captions))``;
- MODEL.TASK 'tbps' with 'mlm' in LOSS.NAMES (IRRA's masked-token prediction): the items also
  carry ``mlm_ids`` / ``mlm_labels`` (L,), the caption masked by ``datasets.mlm.TokenMasker``
  with a generator seeded with ``datasets.mlm.mlm_seed(SOLVER.SEED, e, index)``.
- MODEL.TASK 'tbps' (``datasets/tbps_augment.py``): the extra image views of SS-I / MVS-I
  (``img_ss1``, ``img_ss2``, ``img_mvs``), each from its own generator
  ``augment_seed(SOLVER.SEED, e, index, VIEW_STREAMS[view])``, carried only in epochs where a
  loss that reads them weighs > 0 (the trainer calls ``train_set.set_views``); the caption
  augmentation (INPUT.TEXT_AUG) from ``default_rng([SOLVER.SEED, e, index, TEXT_STREAM])``.
  Every stream is independent of the others, so switching views on or off in an epoch changes
  nothing else.

The training loop calls ``data.train_set.set_epoch(epoch)`` before iterating; the DataLoader is
not built with ``persistent_workers``, so its workers are re-created (forked / pickled from the
main process's dataset) at the start of every epoch and see the new epoch. Tokenisation runs in
``__getitem__``, i.e. in the workers. Workers die with the process that started them
(:func:`worker_init`), so a killed trainer leaves none behind.

The training loader is rebuilt only when K of the P x K sampler changes (the phase plan decides
K); the parsed dataset and the image dataset object are reused.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from configs.validate import SAMPLERS
from utils.dist import world_info
from utils.process import die_with_parent

from .bases import Record, ReIDDataset, unseen_test_ids
from .factory import build_dataset
from .mlm import TokenMasker
from .samplers import PKBatchSampler, RandomBatchSampler, check_pk_batch
from .tbps_augment import VIEW_STREAMS, CaptionAugment, main_pipeline, view_pipelines
from .text_datasets import BACK_TRANSLATION_KEY
from .tokenize import CaptionTokenizer, build_tokenizer, truncation_warning
from .transforms import brightness, build_transforms, cache_transform

logger = logging.getLogger("phasereid")


# The word after (seed, epoch, index) in the augmentation seed: keeps the augmentation stream
# apart from the caption draw, which is seeded with (seed, epoch, index) alone.
_AUGMENT_STREAM = 1


def augment_seed(seed: int, epoch: int, index: int, stream: int = _AUGMENT_STREAM) -> int:
    """The seed of item ``index``'s augmentation generator in ``epoch``: the first 63 bits of
    ``numpy.random.SeedSequence([seed, epoch, index, stream])`` (a well-mixed hash of the four
    words, so neighbouring items and epochs get unrelated streams). ``stream`` 1 is the main
    image; the TBPS views have their own (``datasets.tbps_augment.VIEW_STREAMS``)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index), int(stream)])
    return int(state.generate_state(1, np.uint64)[0] >> np.uint64(1))


def read_image(path: str) -> Image.Image:
    """Open an image as RGB; a missing or unreadable file is an error naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image listed by the dataset is missing: {path}") from None
    except OSError as exc:
        raise OSError(f"cannot read image {path}: {exc}") from exc


def check_images_readable(records: Sequence[Record], split: str = "test") -> None:
    """Before training: every image of ``records`` opens as an image (``Image.open`` parses the
    header, ``verify()`` checks the file's structure without decoding the pixels), so a corrupt
    or missing test image stops the run before epoch 1, not at the first evaluation.

    Raises OSError / FileNotFoundError naming the first unreadable file and how many there are.
    Cost: one file open and header parse per image, measured at 0.2-0.4 ms per image on a local
    disk (2-core machine, busy with a training run): 0.6 s for the quickstart's 1,873 SynthPedes
    test images, so about 5-10 s for Market-1501's 23,100 query + gallery images and 20-40 s for
    MSMT17's 93,820 (more on a network file system). ``train.py`` calls it when
    SOLVER.EVAL_PERIOD > 0.
    """
    bad = []
    for record in records:
        try:
            with Image.open(record.path) as img:
                img.verify()
        except (OSError, SyntaxError, ValueError) as exc:   # PIL raises SyntaxError on bad PNGs
            bad.append((record.path, exc))
    if bad:
        path, exc = bad[0]
        raise OSError(f"{len(bad)} of the {len(records)} {split} images cannot be read, first: "
                      f"{path} ({exc}); evaluation would fail on it. Replace or remove the "
                      "file(s), or set SOLVER.EVAL_PERIOD 0 to train without evaluation")


class ImageDataset(Dataset):
    """Records -> batch items (dicts). The brightness is measured after augmentation.

    Args:
        records: the split's records.
        transform: image transform (``build_transforms``), called as ``transform(img,
            generator)`` with a generator seeded per (seed, epoch, index) (module docstring).
        pixel_mean, pixel_std: the normalisation, to de-normalise for the brightness.
        tokenizer: with a tokenizer, items also carry ``caption``, ``text_ids`` (L,) and
            ``text_mask`` (L,): one of the record's captions drawn per (seed, epoch, index)
            (module docstring); every record must then have a caption.
        caption_seed: SOLVER.SEED, the first word of the caption draw's and the augmentation's
            seeds.
        cache: (M, 3, H, W) uint8 tensor of the images after the pipeline's deterministic
            prefix (:func:`decode_images`); ``transform`` is then the pipeline after that
            prefix (``build_transforms(cfg, True, cached=True)``) and no file is read.
        cache_rows: the cache row of each record (default: row i = record i); the (image,
            caption) pairs of text-based person search share their image's row.
        masker: with a tokenizer, items also carry ``mlm_ids`` / ``mlm_labels`` (L,), the
            caption's ids masked per (seed, epoch, index) (``datasets.mlm.TokenMasker``).
        views: extra image views by batch key (``datasets.tbps_augment.view_pipelines``), each
            ``pipeline(resized uint8 image, generator)``; none is produced until
            :meth:`set_views` names it.
        view_prefix: PIL image -> the resized uint8 tensor the views start from
            (``datasets.transforms.cache_transform``); not used with ``cache``.
        caption_augment: a ``datasets.tbps_augment.CaptionAugment`` applied to the drawn
            caption (back-translation from ``Record.attrs['captions_bt']``, random deletion).
    """

    def __init__(self, records: Sequence[Record], transform, pixel_mean, pixel_std,
                 tokenizer: Optional[CaptionTokenizer] = None, caption_seed: int = 0,
                 cache: Optional[torch.Tensor] = None,
                 cache_rows: Optional[Sequence[int]] = None, views: Optional[dict] = None,
                 view_prefix=None, caption_augment=None, masker: Optional[TokenMasker] = None):
        self.records = list(records)
        self.cache_rows = (list(range(len(self.records))) if cache_rows is None
                           else [int(r) for r in cache_rows])
        if len(self.cache_rows) != len(self.records):
            raise ValueError(f"{len(self.cache_rows)} cache rows for {len(self.records)} records")
        if cache is not None and cache.shape[0] != max(self.cache_rows, default=-1) + 1:
            raise ValueError(f"image cache has {cache.shape[0]} rows; the records use "
                             f"{max(self.cache_rows, default=-1) + 1}")
        self.cache = cache
        self.transform = transform
        self.pixel_mean = list(pixel_mean)
        self.pixel_std = list(pixel_std)
        self.tokenizer = tokenizer
        self.caption_seed = int(caption_seed)
        self.epoch = 0
        self.masker = masker
        self.views = dict(views or {})
        self.view_prefix = view_prefix
        self.active_views: Tuple[str, ...] = ()
        self.caption_augment = caption_augment
        if self.views and cache is None and view_prefix is None:
            raise ValueError("extra views without the image cache need view_prefix (the resize "
                             "to a uint8 tensor, datasets.transforms.cache_transform)")
        if tokenizer is not None:
            missing = [r.path for r in self.records if not r.captions]
            if missing:
                raise ValueError(f"{len(missing)} image(s) have no caption but text is on, "
                                 f"e.g. {missing[0]}")

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the caption draw and the augmentation (call before iterating; workers
        are re-created per epoch, so they see it)."""
        self.epoch = int(epoch)

    def set_views(self, names: Sequence[str]) -> None:
        """The extra views the items carry from now on (call before iterating, like
        :meth:`set_epoch`); each must be one of ``views``."""
        unknown = [n for n in names if n not in self.views]
        if unknown:
            raise KeyError(f"view(s) {unknown} were not built for this dataset (built: "
                           f"{sorted(self.views)}); see datasets.tbps_augment.view_pipelines")
        self.active_views = tuple(names)

    def caption(self, index: int) -> str:
        """The caption of item ``index`` in the current epoch (augmented with
        ``caption_augment``)."""
        record = self.records[index]
        captions = record.captions
        k = 0
        if len(captions) > 1:
            rng = np.random.default_rng([self.caption_seed, self.epoch, index])
            k = int(rng.integers(len(captions)))
        if self.caption_augment is None or not self.caption_augment.active:
            return captions[k]
        back = record.attrs.get("captions_bt")
        return self.caption_augment(captions[k], back[k] if back else None, self.epoch, index)

    def augment_generator(self, index: int, stream: int = _AUGMENT_STREAM) -> torch.Generator:
        """The generator of item ``index``'s augmentation in the current epoch (``stream``: the
        main image's, or a view's, ``datasets.tbps_augment.VIEW_STREAMS``)."""
        return torch.Generator().manual_seed(augment_seed(self.caption_seed, self.epoch, index,
                                                          stream))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        img = (self.cache[self.cache_rows[index]] if self.cache is not None
               else read_image(record.path))
        views = {}
        if self.active_views:
            base = img if self.cache is not None else self.view_prefix(img)
            views = {name: self.views[name](base, self.augment_generator(index,
                                                                         VIEW_STREAMS[name]))
                     for name in self.active_views}
        img = self.transform(img, self.augment_generator(index))
        item = {
            "img": img,
            "pid": record.pid,
            "camid": record.camid,
            "viewid": record.viewid,
            "path": record.path,
            "brightness": brightness(img, self.pixel_mean, self.pixel_std),
            "index": index,
            **views,
        }
        if self.tokenizer is not None:
            caption = self.caption(index)
            ids, mask = self.tokenizer([caption])
            item.update(caption=caption, text_ids=ids[0], text_mask=mask[0])
            if self.masker is not None:
                mlm_ids, mlm_labels = self.masker(ids[0], mask[0], self.epoch, index)
                item.update(mlm_ids=mlm_ids, mlm_labels=mlm_labels)
        return item


@dataclass
class ReIDData:
    """Everything training and testing need from the data side."""

    dataset: ReIDDataset
    train_set: ImageDataset
    test_loader: DataLoader
    unseen_test_ids: dict = field(default_factory=dict)  # {'camera': [...], 'view': [...]}

    @property
    def num_classes(self) -> int:
        return self.dataset.num_train_pids


def per_process_batch(cfg) -> int:
    world, _ = world_info()
    if cfg.SOLVER.IMS_PER_BATCH % world:
        raise ValueError(f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not divisible by "
                         f"the world size {world}")
    return cfg.SOLVER.IMS_PER_BATCH // world


def check_train_batches(cfg, ks_by_epoch: Sequence[tuple]) -> None:
    """Before training: every K the run will use (``(epoch, K)`` pairs from the phase plan) must
    divide the per-process batch when DATALOADER.SAMPLER is 'pk' (the P x K sampler checks the
    same rule when it is built)."""
    batch = per_process_batch(cfg)
    if cfg.DATALOADER.SAMPLER != "pk":   # the value itself is checked at load (configs/validate)
        return
    for epoch, k in ks_by_epoch:
        check_pk_batch(batch, k, f"epoch {epoch}; DATALOADER.NUM_INSTANCE or "
                                 "DATALOADER.PHASED.K_*")


def build_train_loader(cfg, train_set: ImageDataset, num_instances: int) -> DataLoader:
    """The training loader for a given K (call ``loader.batch_sampler.set_epoch(e)`` per epoch).

    DATALOADER.SAMPLER 'pk' -> P x K batches (P = batch / K), 'random' -> shuffled batches.
    """
    world, rank = world_info()
    batch = per_process_batch(cfg)
    pids = [r.pid for r in train_set.records]
    if cfg.DATALOADER.SAMPLER == "pk":
        sampler = PKBatchSampler(pids, batch, num_instances, seed=cfg.SOLVER.SEED,
                                 num_replicas=world, rank=rank)
    elif cfg.DATALOADER.SAMPLER == "random":
        sampler = RandomBatchSampler(len(pids), batch, seed=cfg.SOLVER.SEED,
                                     num_replicas=world, rank=rank)
    else:
        raise ValueError(f"DATALOADER.SAMPLER '{cfg.DATALOADER.SAMPLER}' is not one of "
                         f"{list(SAMPLERS)}")
    # No persistent_workers: workers are re-created each epoch, so they see train_set.set_epoch.
    return DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.DATALOADER.NUM_WORKERS,
                      pin_memory=torch.cuda.is_available(), worker_init_fn=worker_init())


def build_test_loader(cfg, records: List[Record]) -> DataLoader:
    """The test loader over ``records``, in their order (test items carry no text)."""
    test_set = ImageDataset(records, build_transforms(cfg, is_train=False),
                            cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)
    return DataLoader(test_set, batch_size=cfg.TEST.IMS_PER_BATCH, shuffle=False,
                      num_workers=cfg.DATALOADER.NUM_WORKERS,
                      pin_memory=torch.cuda.is_available(), worker_init_fn=worker_init())


def _init_worker(parent: int, worker_id: int) -> None:
    die_with_parent(parent, signal.SIGKILL)


def worker_init():
    """The loaders' ``worker_init_fn``: each worker is SIGKILLed by Linux when the process that
    started it dies (``utils.process.die_with_parent``), so no worker outlives a killed or
    crashed trainer. It draws no random number (the items' randomness is seeded per item)."""
    return functools.partial(_init_worker, os.getpid())


def build_dataset_rank0_first(cfg) -> ReIDDataset:
    """Under DDP rank 0 parses (and, for SynthPedes, generates) the dataset before the others,
    so processes never race to write the same files."""
    world, rank = world_info()
    if world > 1 and rank != 0:
        dist.barrier()
    dataset = build_dataset(cfg)
    if world > 1 and rank == 0:
        dist.barrier()
    return dataset


def warn_unseen_test_ids(cfg, dataset: ReIDDataset) -> dict:
    """Warn (rank 0) when the SIE table of a side (MODEL.SIE_CAMERA / MODEL.SIE_VIEW) has rows
    that training never updates: camera / view ids of the test images that no training image
    has keep their random initialisation. Returns ``unseen_test_ids(dataset)``."""
    unseen = unseen_test_ids(dataset)
    _, rank = world_info()
    sides = (("camera", cfg.MODEL.SIE_CAMERA, "MODEL.SIE_CAMERA"),
             ("view", cfg.MODEL.SIE_VIEW, "MODEL.SIE_VIEW"))
    for side, enabled, key in sides:
        if enabled and unseen[side] and rank == 0:
            logger.warning(
                "%s: test %s id(s) %s never occur in the training split, so their SIE embedding "
                "rows (%s True) stay at their random initialisation and the features of those "
                "test images are shifted by an untrained vector", dataset.name, side,
                unseen[side], key)
    return unseen


def decode_images(cfg, records: Sequence[Record]) -> torch.Tensor:
    """DATALOADER.CACHE_IMAGES: decode every training image once, through the deterministic
    prefix of the training pipeline (resize to INPUT.SIZE_TRAIN), into one (N, 3, H, W) uint8
    tensor (N x 3 x H x W bytes: 31 MB for the quickstart's 5,264 images at 64x32, 129 MB at
    128x64, 1.3 GB for Market-1501 at 256x128). The random steps then run on these tensors and give exactly the
    tensors the uncached pipeline gives, so the trained weights do not change; only the JPEG
    decode and resize leave the epoch loop. An unreadable image is an error here, before
    training."""
    prefix = cache_transform(cfg)
    height, width = (int(v) for v in cfg.INPUT.SIZE_TRAIN)
    cache = torch.empty((len(records), 3, height, width), dtype=torch.uint8)
    start = time.time()
    for i, record in enumerate(records):
        cache[i] = prefix(read_image(record.path))
    logger.info("Decoded %d training images into memory (%.0f MB) in %.1f s "
                "(DATALOADER.CACHE_IMAGES)", len(records), cache.numel() / 2 ** 20,
                time.time() - start)
    return cache


def caption_pairs(records: Sequence[Record]) -> Tuple[List[Record], List[int]]:
    """The training items of text-based person search: one per (image, caption) pair, as IRRA
    (``datasets/bases.py`` ``ImageTextDataset``): record i with captions [c_1, ..., c_n] gives n
    items, each a copy of the record with ``captions = [c_k]``, in record then caption order.

    Returns:
        (pair records, index of each pair's image in ``records``).
    A record's back-translations (``attrs['captions_bt']``, one per caption) go with their
    captions: pair k keeps ``[captions_bt[k]]``.
    """
    pairs, rows = [], []
    for i, record in enumerate(records):
        back = record.attrs.get(BACK_TRANSLATION_KEY)
        for k, caption in enumerate(record.captions):
            attrs = record.attrs if back is None else {**record.attrs,
                                                       BACK_TRANSLATION_KEY: [back[k]]}
            pairs.append(dataclasses.replace(record, captions=[caption], attrs=attrs))
            rows.append(i)
    return pairs, rows


def check_back_translations(cfg, dataset: ReIDDataset) -> None:
    """INPUT.TEXT_AUG.BACKTRANS_P > 0 needs back-translated captions (``captions_bt``) in the
    annotation: none in any training record is an error naming the file and the key. Records
    without one keep their caption (``datasets/tbps_augment.py``)."""
    p = cfg.INPUT.TEXT_AUG.BACKTRANS_P
    if p <= 0:
        return
    have = sum(1 for r in dataset.train if r.attrs.get(BACK_TRANSLATION_KEY))
    source = dataset.info.get("annotation", f"the {dataset.name} caption file")
    if not have:
        raise ValueError(f"INPUT.TEXT_AUG.BACKTRANS_P {p} but no training entry of {source} has "
                         f"a '{BACK_TRANSLATION_KEY}' field (back-translated captions, one per "
                         "caption, TBPS-CLIP's {split}_reid.json layout): add it to the "
                         "annotation or set INPUT.TEXT_AUG.BACKTRANS_P 0")
    if world_info()[1] == 0:
        logger.info("Back-translation p %g: %d of %d training images have '%s' (%s)", p, have,
                    len(dataset.train), BACK_TRANSLATION_KEY, source)


def make_dataloader(cfg) -> ReIDData:
    """Parse the dataset named by the config (once) and build the test loader.

    Training loaders come from :func:`build_train_loader` with the K of the current phase. With
    DATASETS.CAPTION_SOURCE != 'none' the training items carry text (module docstring). Test
    camera / view ids absent from training are a warning when SIE uses them
    (:func:`warn_unseen_test_ids`).
    """
    dataset = build_dataset_rank0_first(cfg)
    logger.info(dataset.statistics())
    unseen = warn_unseen_test_ids(cfg, dataset)
    tokenizer = None
    if cfg.DATASETS.CAPTION_SOURCE != "none":
        tokenizer = build_tokenizer(cfg)
        key = ("MODEL.TBPS.CONTEXT_LENGTH" if cfg.MODEL.TASK == "tbps"
               else "MODEL.TEXT.CONTEXT_LENGTH")
        warning = truncation_warning(tokenizer, [c for r in dataset.train for c in r.captions],
                                     key)
        if warning and world_info()[1] == 0:
            logger.warning("%s training captions: %s", dataset.name, warning)
    cache = decode_images(cfg, dataset.train) if cfg.DATALOADER.CACHE_IMAGES else None
    records, rows, masker = dataset.train, None, None
    if cfg.MODEL.TASK == "tbps":
        records, rows = caption_pairs(dataset.train)
        logger.info("Text-based person search: %d training items, one per (image, caption) pair "
                    "of %d images", len(records), len(dataset.train))
        if "mlm" in cfg.LOSS.NAMES:
            masker = TokenMasker.from_tokenizer(tokenizer, cfg.LOSS.MLM.P, cfg.SOLVER.SEED)
    caption_augment = None
    if tokenizer is not None:
        caption_augment = CaptionAugment(cfg.INPUT.TEXT_AUG.DELETE_P,
                                         cfg.INPUT.TEXT_AUG.BACKTRANS_P, cfg.SOLVER.SEED)
        check_back_translations(cfg, dataset)
    prefix = cache_transform(cfg)
    transform = (main_pipeline(cfg, None if cache is not None else prefix)
                 or build_transforms(cfg, is_train=True, cached=cache is not None))
    train_set = ImageDataset(records, transform,
                             cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, tokenizer=tokenizer,
                             caption_seed=cfg.SOLVER.SEED, cache=cache, cache_rows=rows,
                             views=view_pipelines(cfg), view_prefix=prefix,
                             caption_augment=caption_augment, masker=masker)
    return ReIDData(dataset, train_set, build_test_loader(cfg, dataset.test), unseen)
