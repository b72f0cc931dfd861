"""What a user asks of a run: the options of `cvtool train`, checked once (TrainConfig.validate)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from cvtool.errors import UsageError
from cvtool.model.spec import ACTIVATIONS, NORMS
from cvtool.train.schedule import SCHEDULES

OPTIMIZERS = ("sgd", "momentum", "adam")


@dataclass
class TrainConfig:
    data: str | None = None  # None: the built-in synthetic shapes
    epochs: int = 6
    batch_size: int = 8
    img_size: int = 96
    lr: float = 5e-3
    optimizer: str = "adam"
    schedule: str = "poly"
    warmup: float = 0.03  # fraction of the run
    encoder_lr: float = 1.0  # a pretrained encoder's learning rate, as a fraction of the rest's (cvtool.train.optim)
    frozen_bn: bool = False  # a pretrained encoder's BatchNorm statistics frozen (cvtool.train.optim)
    weight_decay: float = 0.0
    activation: str = "relu"
    width: int = 16
    depth: int = 3
    norm: str = "batch"
    encoder: str = "unet"  # unet | lite0 (cvtool/model/lite0.py); its starting weights come as the loop's `start`
    val_split: float = 0.2
    seed: int = 0
    time_budget: float | None = None  # seconds; the schedule then runs on elapsed time
    class_balance: bool = True
    dice: float = 1.0  # weight of the soft Dice loss added to the cross-entropy (0: cross-entropy only)
    synth_train: int = 2400  # synthetic images per epoch (6 x 2400 / 8 = 1800 steps: ~150 s on 2 cores)
    synth_val: int = 64
    synth_size: int = 128  # synthetic images are generated at this size, cropped to img_size
    backend: str = "torch"
    device: str = "cpu"

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {self.optimizer!r}", hint=f"choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {self.schedule!r}", hint=f"choose one of {', '.join(SCHEDULES)}")
        for name in ("epochs", "batch_size", "img_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if not self.lr > 0:
            raise UsageError("--lr must be positive")
        if not 0 <= self.warmup < 1:
            raise UsageError(f"--warmup is a fraction of the run: 0 <= warmup < 1, got {self.warmup}")
        if not 0 < self.encoder_lr <= 10:
            raise UsageError(f"--encoder-lr is a fraction of the learning rate: 0 < f <= 10, got {self.encoder_lr}")
        if self.weight_decay < 0:
            raise UsageError("--weight-decay must be at least 0")
        if self.width < 1 or not 0 <= self.depth <= 6:
            raise UsageError(f"--width must be at least 1 and --depth between 0 and 6 (got {self.width}, {self.depth})")
        if self.activation not in ACTIVATIONS or self.norm not in NORMS:
            raise UsageError(f"unknown activation {self.activation!r} or norm {self.norm!r}",
                             hint=f"activations: {', '.join(ACTIVATIONS)}; norms: {', '.join(NORMS)}")
        if not self.dice >= 0:
            raise UsageError(f"--dice is the weight of the Dice loss: at least 0, got {self.dice}")
        if not 0 < self.val_split < 1:
            raise UsageError("--val-split must be between 0 and 1")
        if self.time_budget is not None and self.time_budget <= 0:
            raise UsageError("--time must be positive")
        m = 2**self.depth
        if self.img_size % m:
            raise UsageError(f"--img-size {self.img_size} must be divisible by 2**depth = {m}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        d = {"dice": 0.0, **d}  # a run saved before the Dice term existed resumes with the loss it began with
        return cls(**{k: v for k, v in d.items() if k in names})
