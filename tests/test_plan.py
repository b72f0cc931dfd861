"""The plan's rules as pure functions: literal fingerprints in, literal plans out."""

import pytest

from cvtool.data.fingerprint import Fingerprint
from cvtool.errors import UsageError
from cvtool.train.plan import MIN_CROP, Plan, fill_budget, propose, shrink, thin


def fp_of(**kw) -> Fingerprint:
    base = dict(n_train=24, n_val=6, classes=["background", "foreground"], channels=1, size_h=[512, 512, 512],
                size_w=[512, 512, 512], mean=[0.495], std=[0.174], class_share=[0.218, 0.782], class_images=[1.0, 1.0],
                val_images=[6, 6], ignore_share=0.0, object_area=[50000.0, 2000.0], object_count=[98, 2770],
                thickness=[7.47, 27.5])
    return Fingerprint(**{**base, **kw})


MEMBRANE = fp_of()  # 30 EM tiles 512x512, thin membranes (7.5 px) around cells
PETS = fp_of(n_train=132, n_val=33, classes=["background", "Abyssinian", "american_bulldog", "Bengal"], channels=3,
             size_h=[116, 375, 1024], size_w=[150, 500, 1024], mean=[0.45, 0.39, 0.34], std=[0.26, 0.26, 0.27],
             class_share=[0.704, 0.135, 0.088, 0.073], class_images=[1.0, 0.37, 0.3, 0.33], val_images=[33, 6, 15, 12],
             object_area=[49782.0, 20743.0, 2170.0, 233.5], object_count=[226, 79, 103, 98],
             thickness=[222.7, 115.1, 85.7, 72.4])
TINY = fp_of(n_train=5, n_val=1, channels=3, size_h=[40, 48, 48], size_w=[64, 64, 80], mean=[0.5] * 3, std=[0.2] * 3,
             class_share=[0.9, 0.1], object_area=[2500.0, 100.0], thickness=[30.0, 4.0])


def test_membrane_plan():
    p = propose(MEMBRANE, device="cpu", budget=300)
    assert (p.scale, p.crop, p.batch_size, p.depth, p.width) == (1.0, 256, 2, 3, 16)
    assert p.lr == 0.0015 and p.augment == "heavy" and p.rot90 and p.p_focus == 0 and p.tta == "dihedral"
    assert p.mean == [0.495] and p.std == [0.174]
    assert "7.5 px thick" in p.reasons["scale"]  # shrinking would thin the membranes below 8 px
    assert "typical object 45 px" in p.reasons["depth"]  # 6 thicknesses: the network's reach, not its extent


def test_pets_plan():
    p = propose(PETS, device="cpu", budget=300)
    assert p.scale == 0.512  # long side 500 -> 256
    assert (p.crop, p.batch_size, p.depth) == (192, 4, 4)
    assert p.lr == 0.0021 and p.augment == "default" and not p.rot90 and p.tta == "flip"
    assert p.p_focus == 0.33 and p.focus == [1, 2, 3]
    assert "375x500 -> 192x256" in p.reasons["scale"]


def test_gpu_plan_affords_more_context():
    p = propose(PETS, device="cuda", budget=300)
    assert p.scale == 1.0 and p.width == 32 and p.crop == 384 and p.batch_size == 2  # 375 -> 384, 2 x 384^2 px


def test_tiny_plan_fits_the_data():
    p = propose(TINY, device="cpu", budget=60)
    assert (p.scale, p.crop, p.batch_size, p.depth) == (1.0, 64, 32, 3)
    assert p.augment == "heavy" and not p.rot90 and p.p_focus == 0  # 10% is not under 10%


def test_overrides_win_and_say_so():
    p = propose(PETS, device="cpu", budget=300, overrides={"crop": 128, "lr": 1e-3, "augment": "none"})
    assert (p.crop, p.lr, p.augment) == (128, 1e-3, "none")
    assert p.batch_size == 8  # derived from the crop the user chose
    rows = {name: why for name, _, why in p.rows()}
    assert rows["crop"] == rows["lr"] == rows["augment"] == "set by you"
    assert rows["batch_size"] != "set by you"
    with pytest.raises(UsageError):
        propose(PETS, overrides={"augment": "extreme"})


def test_fill_budget_literal():
    p = fill_budget(propose(MEMBRANE, budget=300), step_s=0.1, val_s=2.0, setup_s=10.0)
    assert p.val_at == [0.5, 0.571, 0.643, 0.714, 0.786, 0.857, 0.929, 1.0]  # 8 x 2 s <= 10% of 300 s
    assert p.steps == int((300 * 0.99 - 10 - 8 * 2.0) / 0.1)
    q = fill_budget(propose(MEMBRANE, budget=100), step_s=0.1, val_s=4.0, setup_s=5.0)
    assert q.val_at == [0.5, 1.0]  # 10 s of validation: two passes
    r = fill_budget(propose(MEMBRANE, budget=60), step_s=0.1, val_s=30.0, setup_s=5.0)
    assert r.val_at == [1.0]  # always the last one


def test_shrink_down_to_the_floor():
    p = propose(MEMBRANE, budget=300)
    sizes = [p.crop]
    while (p := shrink(p)) is not None:
        sizes.append(p.crop)
    assert sizes == [256, 192, 128, 96] and sizes[-1] == MIN_CROP
    assert shrink(propose(MEMBRANE, overrides={"crop": 256})) is None  # the user's crop is kept


def test_plan_round_trips_through_json():
    p = fill_budget(propose(PETS, budget=300), step_s=0.2, val_s=1.0, setup_s=8.0)
    assert Plan.from_dict(p.to_dict()) == p


def test_thin_drops_later_validations_when_they_run_slow():
    at = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert thin(at, 1, spent=2.0, took=2.0, budget=300) == at  # 28 s left fits the 5 still to come
    assert thin(at, 1, spent=10.0, took=10.0, budget=300) == [0.5, 0.6, 1.0]  # 20 s left: two more
    assert thin(at, 1, spent=25.0, took=25.0, budget=300) == [0.5, 1.0]  # none fits: the last is kept anyway
    assert thin(at, 6, spent=99.0, took=9.0, budget=300) == at  # all done
