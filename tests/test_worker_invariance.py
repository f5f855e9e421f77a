"""DATALOADER.NUM_WORKERS does not change the trained weights: every random choice of a training
item is seeded by (SOLVER.SEED, epoch, index) (datasets/make_dataloader.py)."""
import os
import random

import torch

import train as train_script
from configs import load_config
from conftest import tiny_opts
from datasets.make_dataloader import make_dataloader
from utils.checkpoint import load_checkpoint


def test_zero_and_two_workers_train_identical_weights(synth_root, tmp_path):
    weights = {}
    for workers in (0, 2):
        out = str(tmp_path / f"workers{workers}")
        assert train_script.main(tiny_opts(synth_root, out, **{
            "SOLVER.MAX_EPOCHS": 1, "SOLVER.EVAL_PERIOD": 0, "INPUT.RE_PROB": 0.5,
            "DATALOADER.NUM_WORKERS": workers})) == 0
        weights[workers] = load_checkpoint(os.path.join(out, "transformer_1.pth"))["model"]
    assert weights[0].keys() == weights[2].keys()
    differ = [k for k in weights[0] if not torch.equal(weights[0][k], weights[2][k])]
    assert differ == [], f"{len(differ)} of {len(weights[0])} tensors differ: {differ[:5]}"


def test_training_item_is_a_function_of_seed_epoch_and_index(synth_root, tmp_path):
    cfg = load_config(opts=tiny_opts(synth_root, str(tmp_path), **{"INPUT.RE_PROB": 0.5}))
    train_set = make_dataloader(cfg).train_set
    train_set.set_epoch(3)
    torch.manual_seed(0)
    random.seed(0)
    first = [train_set[i] for i in (5, 0, 2)]
    torch.manual_seed(99)   # another global state and another order: the same items
    random.seed(99)
    second = {i: train_set[i] for i in (2, 5, 0)}
    for item in first:
        again = second[item["index"]]
        assert torch.equal(item["img"], again["img"])
        assert torch.equal(item["brightness"], again["brightness"])
    # the item is the pipeline applied with the generator of (seed, epoch, index) ...
    from datasets.make_dataloader import augment_seed, read_image
    record = train_set.records[5]
    gen = torch.Generator().manual_seed(augment_seed(cfg.SOLVER.SEED, 3, 5))
    assert torch.equal(train_set.transform(read_image(record.path), gen), first[0]["img"])
    # ... so another epoch draws other augmentations
    train_set.set_epoch(4)
    assert not all(torch.equal(train_set[i]["img"], second[i]["img"]) for i in (0, 2, 5))


def test_cached_images_give_the_same_items(synth_root, tmp_path):
    """DATALOADER.CACHE_IMAGES decodes once and augments the uint8 tensors: every training item
    (image after flip / pad / crop / erasing, brightness) equals the uncached pipeline's."""
    sets = {}
    for cached in (False, True):
        cfg = load_config(opts=tiny_opts(synth_root, str(tmp_path), **{
            "INPUT.RE_PROB": 0.5, "INPUT.PROB": 0.5, "INPUT.PADDING": 6,
            "INPUT.SIZE_TRAIN": "[56, 28]", "DATALOADER.CACHE_IMAGES": cached}))
        sets[cached] = make_dataloader(cfg).train_set
    assert sets[False].cache is None and sets[True].cache.dtype == torch.uint8
    assert tuple(sets[True].cache.shape[1:]) == (3, 56, 28)
    for epoch in (1, 2):
        for train_set in sets.values():
            train_set.set_epoch(epoch)
        for i in range(len(sets[False])):
            plain, cached = sets[False][i], sets[True][i]
            assert torch.equal(plain["img"], cached["img"]), (epoch, i)
            assert torch.equal(plain["brightness"], cached["brightness"])


def test_cached_images_train_identical_weights(synth_root, tmp_path):
    weights = {}
    for cached in (False, True):
        out = str(tmp_path / f"cached{cached}")
        assert train_script.main(tiny_opts(synth_root, out, **{
            "SOLVER.MAX_EPOCHS": 1, "SOLVER.EVAL_PERIOD": 0, "INPUT.RE_PROB": 0.5,
            "DATALOADER.CACHE_IMAGES": cached})) == 0
        weights[cached] = load_checkpoint(os.path.join(out, "transformer_1.pth"))["model"]
    differ = [k for k in weights[False] if not torch.equal(weights[False][k], weights[True][k])]
    assert differ == [], f"{len(differ)} of {len(weights[False])} tensors differ: {differ[:5]}"
