"""The plan's rules as pure functions: literal fingerprints in, literal plans out."""

import pytest

from cvtool.data.fingerprint import Fingerprint
from cvtool.errors import UsageError
from cvtool.model.inference import halo
from cvtool.model.spec import ModelSpec
from cvtool.train.plan import (
    LITE0_MIN_CROP,
    MIN_BN_BATCH,
    MIN_CROP,
    MIN_STEPS,
    Plan,
    depth_cap,
    propose,
)
from cvtool.train.plan_budget import fill_budget, replan_after_validation, shrink, thin, training_steps


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
# the outside datasets, as their fingerprints would read
STREET = fp_of(n_train=81, n_val=20, classes=[f"c{k}" for k in range(11)], channels=3, size_h=[360, 360, 360],
               size_w=[480, 480, 480], mean=[0.4] * 3, std=[0.25] * 3,
               class_share=[0.2, 0.25, 0.01, 0.2, 0.1, 0.08, 0.03, 0.04, 0.02, 0.05, 0.02],
               class_images=[1.0] * 11, val_images=[20] * 11, object_area=[9000.0] * 11, object_count=[100] * 11,
               thickness=[60.0, 80.0, 3.5, 50.0, 40.0, 30.0, 6.0, 12.0, 9.0, 20.0, 5.0], val_sizes=[[360, 480, 20]])
AERIAL = fp_of(n_train=58, n_val=14, classes=[f"c{k}" for k in range(5)], channels=3, size_h=[440, 620, 838],
               size_w=[440, 640, 838], mean=[0.4] * 3, std=[0.2] * 3, class_share=[0.3, 0.25, 0.2, 0.15, 0.1],
               class_images=[1.0] * 5, val_images=[14] * 5, object_area=[90000.0, 60000.0, 40000.0, 30000.0, 20000.0],
               object_count=[50] * 5, thickness=[120.0, 90.0, 80.0, 70.0, 40.0], val_sizes=[[620, 640, 14]])
TINY = fp_of(n_train=5, n_val=1, channels=3, size_h=[40, 48, 48], size_w=[64, 64, 80], mean=[0.5] * 3, std=[0.2] * 3,
             class_share=[0.9, 0.1], object_area=[2500.0, 100.0], thickness=[30.0, 4.0])


def test_membrane_plan():
    p = propose(MEMBRANE, device="cpu", budget=300)
    # membranes 7.5 px thick: the 256-px context (x0.5) would thin them to 3.75 px, keeping 8 px costs 4x the
    # pixels; they are 1 class of 2, so half-way: x sqrt(0.5) = 0.707 (5.3 px)
    assert (p.scale, p.crop, p.batch_size, p.depth, p.width) == (0.707, 192, 4, 3, 16)
    assert p.lr == 0.0021 and p.augment == "heavy" and p.rot90 and p.p_focus == 0 and p.tta == "dihedral"
    assert p.mean == [0.495] and p.std == [0.174]
    assert "costs 4.0x the pixels" in p.reasons["scale"] and "thinnest 5.3 px" in p.reasons["scale"]
    assert "typical object 32 px" in p.reasons["depth"]  # 6 thicknesses at 0.707: the network's reach


def test_pets_plan():
    p = propose(PETS, device="cpu", budget=300)
    assert p.scale == 0.512  # long side 500 -> 256
    assert (p.crop, p.batch_size, p.depth) == (192, 4, 4)
    assert p.lr == 0.0021 and p.augment == "default" and not p.rot90 and p.tta == "flip"
    assert p.p_focus == 0.33 and p.focus == [1, 2, 3]
    assert "375x500 -> 192x256" in p.reasons["scale"]


def test_gpu_plan_affords_more_context():
    p = propose(PETS, device="cuda", budget=300)
    assert p.scale == 1.0 and p.width == 32 and p.crop == 384 and p.batch_size == 4  # 375 -> 384; BatchNorm >= 4


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
    assert sizes == [192, 128, 96] and sizes[-1] == MIN_CROP
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


PLANS = {"membrane": MEMBRANE, "pets": PETS, "street": STREET, "aerial": AERIAL, "tiny": TINY}


@pytest.mark.parametrize("name", PLANS)
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_no_batchnorm_batch_below_4_and_depth_fits_the_crop(name, device):
    """On any device, for every plan and every shrink of it: batch >= 4, and the crop carries the depth (8 x 8
    features at the bottom, the reach within the crop)."""
    p = propose(PLANS[name], device=device, budget=300)
    while p is not None:
        assert p.batch_size >= MIN_BN_BATCH
        assert p.crop >= 8 * 2**p.depth and halo(ModelSpec(in_channels=1, num_classes=2, depth=p.depth)) <= p.crop
        p = shrink(p)


def test_depth_cap_literal():
    assert [depth_cap(c) for c in (64, 96, 128, 192, 256, 512)] == [3, 3, 4, 4, 5, 5]  # reach 58, 122, 250 px


def test_bn_floor_shrinks_the_crop_on_cpu_keeps_it_on_gpu():
    p = propose(AERIAL, device="cpu", budget=300)  # 620 x 640 -> x0.4 -> 248 x 256: crop 256 would be batch 2
    assert (p.scale, p.crop, p.batch_size, p.depth) == (0.4, 192, 4, 4)
    assert "BatchNorm" in p.reasons["batch_size"] and "256 -> 192" in p.reasons["batch_size"]
    q = propose(AERIAL, device="cpu", budget=300, overrides={"crop": 256})
    assert (q.crop, q.batch_size) == (256, 4)  # the user's crop is kept; the batch still >= 4
    assert propose(AERIAL, device="cpu", overrides={"batch_size": 2}).batch_size == 2  # the user's word wins


def test_thin_structures_do_not_force_full_resolution():
    """Street scenes, 480 x 360, the thinnest of 11 classes 3.5 px, 5 classes under 8 px at the 256 context
    (x0.533): full resolution would cost 3.5x the pixels for 5/11 of the score; x0.533**(6/11) = 0.71 instead
    (thinnest 2.5 px), and the reason says what it weighed."""
    p = propose(STREET, device="cpu", budget=300)
    assert p.scale == 0.71 and p.batch_size >= 4
    why = p.reasons["scale"]
    assert "5 of 11 classes" in why and "3.5x the pixels" in why and "0.45 of the mean IoU" in why
    assert "thinnest 2.5 px" in why


def test_validation_pixels_in_the_plan():
    """The aerial case at depth 4 on 248 x 256 images: whole, padded to 256 x 256 (1.03x), in the plan's table."""
    p = propose(AERIAL, device="cpu", budget=300)
    assert p.val_pixel_ratio == round(256 * 256 / (248 * 256), 4)
    rows = {name: (value, why) for name, value, why in p.rows()}
    assert rows["val_pixel_ratio"][0] == f"{p.val_pixel_ratio:.3f}" and "2x" in rows["val_pixel_ratio"][1]


def test_a_validation_estimate_does_not_shrink_the_crop():
    """The aerial run: validation estimated at 184 s of 300 leaves under 400 steps, but training alone (validation
    held to its 10%) has 856: the crop stays. Too slow a step still shrinks."""
    p = fill_budget(propose(AERIAL, budget=300), step_s=0.3, val_s=184.0, setup_s=10.0)
    # the 14 validation images are sampled (val_fraction) so that two validations fit in 30 s: the steps are all there
    assert p.val_fraction < 0.1 and p.steps == training_steps(p) == int((300 * 0.99 - 10 - 30) / 0.3) >= MIN_STEPS
    assert shrink(p) is None
    slow = fill_budget(propose(AERIAL, budget=300), step_s=1.0, val_s=184.0, setup_s=10.0)
    assert training_steps(slow) < MIN_STEPS and shrink(slow).crop < slow.crop


def test_replan_after_the_first_validation():
    p = fill_budget(propose(PETS, budget=300), step_s=0.2, val_s=10.0, setup_s=10.0)
    assert p.val_at == [0.5, 0.75, 1.0]  # 3 x 10 s fit in 30 s
    assert replan_after_validation(p, 12.0, spent_val_s=12.0, elapsed_s=150.0, steps_done=600) is None  # 1.2x
    fast = replan_after_validation(p, 2.0, spent_val_s=2.0, elapsed_s=150.0, steps_done=600)  # 5x quicker
    assert fast.val_s == 2.0 and len(fast.val_at) == 8 and fast.val_at[0] == 0.5 and fast.val_at[-1] == 1.0
    assert fast.val_at == sorted(fast.val_at) and fast.steps == 600 + int((297 - 150 - 7 * 2.0) / 0.2)
    assert "took 2.0 s against ~10.0 s" in fast.reasons["val_at"]
    slow = replan_after_validation(p, 25.0, spent_val_s=25.0, elapsed_s=150.0, steps_done=600)  # 2.5x dearer
    # 5 s of the 30 s share left: the final validation runs on a fifth of the images (5 s), not all of them (25 s)
    assert slow.val_at == [0.5, 1.0] and slow.val_fraction == pytest.approx(0.2) and slow.val_s == pytest.approx(5.0)
    assert slow.steps == 600 + int((297 - 150 - 5.0) / 0.2) and "validate" in slow.reasons["val_fraction"]


def test_a_final_validation_inside_the_slack_but_over_the_share_is_sampled():
    """msrc_v2 seed 0: 15 s planned a validation (two fill the 30 s share), 18.9 s measured (1.26x, inside the
    slack): the final one at 18.9 s would take validation to 12.6% of the budget. It runs on 59% of the images."""
    p = fill_budget(propose(PETS, budget=300), step_s=0.2, val_s=15.0, setup_s=10.0)
    assert p.val_at == [0.5, 1.0] and p.val_fraction == 1.0
    q = replan_after_validation(p, 18.9, spent_val_s=18.9, elapsed_s=150.0, steps_done=600)
    assert q.val_at == [0.5, 1.0] and q.val_fraction == pytest.approx((30 - 18.9) / 18.9)
    assert 18.9 + q.val_s == pytest.approx(30.0)  # validation held to its share
    assert replan_after_validation(p, 14.0, spent_val_s=14.0, elapsed_s=150.0, steps_done=600) is None  # it fits


def test_the_encoder_is_chosen_only_from_what_this_machine_can_start():
    for fp in (PETS, MEMBRANE, STREET, AERIAL, TINY):
        p = propose(fp, budget=300)  # the default: the U-Net alone
        assert p.encoder == "unet" and "lite0" in p.reasons["encoder"]
    p = propose(PETS, budget=300, encoders=("unet", "lite0"), overrides={"encoder": "unet"})
    assert p.encoder == "unet" and dict((k, r) for k, _, r in p.rows())["encoder"] == "set by you"


def test_a_lite0_plan_keeps_its_five_levels():
    p = propose(PETS, budget=300, overrides={"encoder": "lite0"}, encoders=("unet", "lite0"))
    assert (p.encoder, p.depth) == ("lite0", 5) and p.crop % 32 == 0
    crops = []
    while (p := shrink(p)) is not None:  # a smaller crop never lowers lite0's depth (its strides are fixed)
        crops.append(p.crop)
        assert p.depth == 5 and p.crop % 32 == 0
    assert crops and crops[-1] == LITE0_MIN_CROP  # 4 x 4 features at stride 32
    assert Plan.from_dict(propose(PETS, encoders=("unet", "lite0")).to_dict()).encoder in ("unet", "lite0")


def test_the_plan_picks_lite0_where_a_crop_carries_its_stride():
    both = ("unet", "lite0")
    for fp in (PETS, STREET, MEMBRANE):  # colour and grayscale alike
        p = propose(fp, budget=300, encoders=both)
        assert (p.encoder, p.depth) == ("lite0", 5) and "seven shared sets" in p.reasons["encoder"]
        assert p.frozen_bn and "ImageNet statistics" in p.reasons["frozen_bn"]  # its pretrained statistics kept
        assert not propose(fp, budget=300, encoders=both, overrides={"frozen_bn": False}).frozen_bn
    t = propose(TINY, budget=300, encoders=both)  # 64-px crops: 2 x 2 features at stride 32
    assert (t.encoder, t.depth) == ("unet", 3) and "it needs 128" in t.reasons["encoder"]
    assert not t.frozen_bn and not propose(TINY, budget=300, encoders=both, overrides={"frozen_bn": True}).frozen_bn


def test_a_validation_set_too_large_for_the_share_is_sampled_not_let_eat_the_budget():
    """ccp (2026-12-03, 300 s): 120 validation images at ~43 s a pass took 27% of the budget in two validations.
    Where a whole pass exceeds half of the validation share, every validation runs the same evenly spaced subset."""
    p = propose(STREET, budget=300)  # 20 validation images
    q = fill_budget(p, step_s=0.1, val_s=60.0, setup_s=5.0)
    assert q.val_fraction == pytest.approx(0.25) and q.val_s == pytest.approx(15.0)
    assert len(q.val_at) == 2 and len(q.val_at) * q.val_s <= 0.10 * 300
    assert "5 of them" in q.reasons["val_fraction"]
    assert fill_budget(p, step_s=0.1, val_s=10.0, setup_s=5.0).val_fraction == 1.0  # a pass that fits runs whole
    from cvtool.train.prepare import val_subset

    assert val_subset(20, 0.25) == [0, 5, 10, 14, 19] and val_subset(3, 0.01) == [0] and val_subset(4, 1.0) == [0, 1, 2, 3]
