"""The training loop: one, for every kind of budget, backend-agnostic.

    result = train(cfg, make_trainer, out_dir, t0=process_start, planned=True)

It is handed a `make_trainer(spec, params, optim, class_weights, seed, dice) -> Trainer` (see
cvtool_backends.base.Trainer) and reports through `on_event(kind, data)`, so it needs neither a framework nor rich.
What the run trains on, and for how long, comes from cvtool/train/prepare.py (the user's options, or a plan);
the budget (epochs, seconds or both, cvtool/train/budget.py) decides each turn whether to validate, train a step or
stop. The clock counts from t0, the process's start: reading, planning, validation and checkpoints included.

Each turn the ranks (torchrun) agree in one all-reduce on the stop code and the clock (the slowest rank's), so every
rank decides alike; rank r trains on global batches k * world + r, DDP averages the gradients, BatchNorm statistics
are averaged before each validation, which every rank runs on the same weights; rank 0 alone writes files.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from cvtool.errors import CvtoolError, UsageError
from cvtool.model import checkpoint as ckpt_io
from cvtool.model.pretrained import Starts
from cvtool.train.batches import Batches
from cvtool.train.config import TrainConfig
from cvtool.train.guards import check_loss, other_rank_failed
from cvtool.train.prepare import Setup, configured, planned
from cvtool.train.ranks import SyncBuffers, seconds_agreed, turn_agreed
from cvtool.train.records import TRACE_POINTS, trace_add, write_curves, write_digest, write_metrics, write_trace
from cvtool.train.schedule import lr_at
from cvtool.train.validate import evaluate_images

# Why a run stopped: the one vocabulary of the summary's "status" (and "stop_reason": epochs, time, signal)
STOP_DONE, STOP_TIME, STOP_SIGNAL = "done", "time budget reached", "interrupted"
GO, SIGNAL, FAILED = 0, 1, 2  # a turn's stop codes; the ranks agree on the largest


def train(cfg: TrainConfig, make_trainer: Callable, out_dir: Path, *, planned_run: bool = False,
          t0: float | None = None, clock: Callable[[], float] = time.perf_counter, overrides: dict | None = None,
          resume: ckpt_io.Checkpoint | None = None, cache_dir: Path | None = None, plan_only: bool = False,
          on_event: Callable[[str, dict], None] = lambda k, d: None, should_stop: Callable[[], bool] = lambda: False,
          rank: int = 0, world: int = 1, digest_dir: str | Path | None = None, start: Starts | None = None) -> dict[str, Any]:
    """Train; returns a summary. Only rank 0 writes files.

    planned_run: fingerprint the data and plan the run to fill cfg.time_budget (else: cfg's options, cfg.epochs).
    t0: the clock reading the budget counts from (default: now); clock: the clock (a test injects its own).
    should_stop() is polled every turn (and between validation images): when it says yes (Ctrl-C, SIGTERM)
    last.safetensors gets everything a resume needs and the status is "interrupted".
    digest_dir: each rank writes a digest of its final weights there (a test hook).
    start: the encoders a new network may start from (a planned run chooses one); None: the U-Net, random.
    """
    cfg.validate()
    t0 = clock() if t0 is None else t0

    def checked() -> None:  # the data passed its checks: an --out that cannot be written fails now, before the work
        if not plan_only and rank == 0:
            from cvtool.fsutil import make_dir

            make_dir(out_dir)

    if planned_run:
        run = planned(cfg, make_trainer, t0=t0, clock=clock, overrides=overrides, resume=resume, cache_dir=cache_dir,
                      on_event=on_event, rank=rank, world=world, checked=checked, starts=start)
        assert run.plan is not None  # a planned run has its plan
        on_event("plan", {"plan": run.plan.to_dict(), "rows": run.plan.rows()})
        if plan_only:
            return {"status": "plan", "plan": run.plan.to_dict(), "fingerprint": run.fingerprint.to_dict(),
                    "out": str(out_dir)}
    else:
        run = configured(cfg, resume=resume, on_event=on_event, rank=rank, world=world, checked=checked, starts=start)
    return Loop(cfg, run, make_trainer, out_dir, t0=t0, clock=clock, resume=resume, on_event=on_event,
                should_stop=should_stop, rank=rank, world=world).run(digest_dir)


class Loop:
    """One run's turns: validate when the budget says so, else train a step; stop when it is spent or asked to."""

    def __init__(self, cfg: TrainConfig, run: Setup, make_trainer: Callable, out_dir: Path, *, t0: float, clock,
                 resume, on_event, should_stop, rank: int, world: int):
        self.cfg, self.run_, self.out_dir, self.clock = cfg, run, out_dir, clock
        self.on_event, self.should_stop, self.rank, self.world = on_event, should_stop, rank, world
        self.st, self.budget = run.state, run.budget
        self.trainer = make_trainer(run.spec, run.params, run.optim, run.class_weights, cfg.seed, run.dice)
        if resume is not None and resume.optim_state:
            self.trainer.load_optim_state(resume.optim_state, int(resume.train_state.get("optim_step", self.st.step)))
        self.agree_turn, self.agree_s = turn_agreed(self.trainer, world), seconds_agreed(self.trainer, world)
        trainer = self.trainer
        self.sync = trainer.sync_buffers if world > 1 and isinstance(trainer, SyncBuffers) else (lambda: None)
        self.base = t0 - self.st.elapsed  # the clock of a resumed run continues where it stopped
        self.metrics: dict = {}
        self.t_train = 0.0  # seconds inside steps (this process)
        self.batches: list[int] = []  # the global batch numbers this rank trained on (for the digest)

    def now(self) -> float:
        return self.clock() - self.base

    def save(self, name: str, metrics: dict | None = None) -> Path | None:
        """best.safetensors / last.safetensors (the one checkpoint writer; last also holds the optimiser state)."""
        if self.rank != 0:
            return None
        run = self.run_
        optim, ostep = self.trainer.optim_state()
        state = {"run": asdict(self.st), "config": asdict(self.cfg), "optim_step": ostep, "metrics": metrics or {},
                 "class_weights": None if run.class_weights is None else run.class_weights.tolist()}
        if run.plan is not None:
            state.update(plan=run.plan.to_dict(), fingerprint=run.fingerprint.to_dict())
        ck = ckpt_io.Checkpoint(spec=run.spec, params=self.trainer.params(), meta=run.meta, train_state=state,
                                optim_state=optim if name == "last" else {})
        return ckpt_io.save(ck, self.out_dir / f"{name}.safetensors")

    def too_short(self, clock: float) -> UsageError:
        """The clock ran out before the first step: nothing trained is written (the plan's check at its start could
        not see the set-up still to come)."""
        from cvtool.train.plan_budget import minimum_budget

        plan = self.run_.plan
        need = minimum_budget(step_s=plan.step_s if plan is not None else 0.0, val_s=self.budget.val_s, setup_s=clock)
        return UsageError(f"--time {self.budget.seconds:g} was spent before the first training step ({clock:.1f} s of "
                          f"set-up); the minimum here is about {need:.0f} s", hint="give a larger --time")

    def write_plan(self) -> None:
        """plan.json: the plan as it stands (written at the start, again when the first validation replans it)."""
        run = self.run_
        if self.rank == 0 and run.plan is not None:
            from cvtool.fsutil import atomic_write_bytes

            doc = {"plan": run.plan.to_dict(), "fingerprint": run.fingerprint.to_dict()}
            atomic_write_bytes(self.out_dir / "plan.json", (json.dumps(doc, indent=2) + "\n").encode())

    def lr(self, step: int, clock: float) -> float:
        r = self.run_
        return lr_at(self.budget.progress(step, clock), r.lr, schedule=r.schedule, warmup=r.warmup)

    def run(self, digest_dir) -> dict[str, Any]:
        run, st, budget = self.run_, self.st, self.budget
        self.write_plan()
        self.on_event("start", {"spec": run.spec.to_dict(), "params": run.spec.num_params(),
                                "mode": "epochs" if budget.steps else "time", "budget": budget.seconds,
                                "steps_per_epoch": budget.steps_per_epoch,
                                "total_steps": budget.steps or (run.plan.steps if run.plan else None),
                                "resumed_at": asdict(st) if st.step else None, "dice": run.dice,
                                "class_weights": None if run.class_weights is None else run.class_weights.tolist(),
                                "elapsed": self.now()})
        every = max(1, round(budget.steps / TRACE_POINTS)) if budget.steps else 1  # a time budget's step count is
        # an estimate: a point a step, and trace_add merges neighbours past 2 x TRACE_POINTS
        self.w_sum, self.w_n = 0.0, 0  # the loss over the steps since the trace's last point
        stopped = None
        failed: CvtoolError | None = None  # under torchrun: this rank's loss check, raised once the ranks agree
        stream = Batches(run.sample, st.step, clock=self.clock)
        try:
            while stopped is None:
                code, clock = self.agree_turn(FAILED if failed is not None else int(self.should_stop()), self.now())
                if code == FAILED:  # every rank stops at the same step
                    raise failed or other_rank_failed(st.step, run.lr)
                if code == SIGNAL:
                    stopped = STOP_SIGNAL
                    break
                over = budget.over(st.step, clock)
                if over == "time" and st.step == 0:
                    raise self.too_short(clock)
                if over or budget.due(st.step, clock):
                    if not self.validate():
                        stopped = STOP_SIGNAL
                    elif over:
                        stopped = STOP_DONE if over == "epochs" else STOP_TIME
                    continue
                failed = self.step(stream.get(), clock, every) or failed
        finally:
            stream.close()
        st.elapsed = self.now()
        if stopped == STOP_SIGNAL:
            self.sync()
        if digest_dir is not None:
            write_digest(Path(digest_dir), self.rank, self.world, self.trainer.params(), self.batches)
        if stopped == STOP_SIGNAL:
            path = self.save("last")
            self.on_event("interrupted", {"checkpoint": str(path) if path else None, "step": st.step})
            return {"status": STOP_SIGNAL, "stop_reason": "signal", "checkpoint": str(path) if path else None,
                    "step": st.step, "epoch": st.epoch, "batch": st.batch, "out": str(self.out_dir),
                    "seconds": round(st.elapsed, 2)}
        return self.summary(stopped, stream.waited)

    def step(self, xy, clock: float, every: int) -> CvtoolError | None:
        """One optimiser step; its loss checked. Under torchrun a failed check is returned, raised next turn."""
        run, st = self.run_, self.st
        x, y = xy
        ts = self.clock()
        lr = self.lr(st.step + 1, clock)
        loss = self.trainer.step(x, y, lr)
        dt = self.clock() - ts
        self.t_train += dt
        failed = None
        try:
            check_loss(loss, y, step=st.step + 1, lr=lr, peak_lr=run.lr, dice=run.dice, out_dir=self.out_dir,
                       resumable=run.plan is None, ignore=run.ignore)  # a planned run's resume keeps its --lr
        except CvtoolError as e:
            if self.world == 1:
                raise
            failed = e  # raised at the top of the next turn, on every rank together
        self.batches.append(st.step * self.world + self.rank)
        st.step += 1
        st.batch += 1
        st.loss_sum += loss
        spe = self.budget.steps_per_epoch
        st.elapsed = self.now()
        self.w_sum, self.w_n = self.w_sum + loss, self.w_n + 1
        if self.w_n >= every:
            trace_add(st.trace, st.step, st.elapsed, self.w_sum / self.w_n)
            self.w_sum, self.w_n = 0.0, 0
        self.on_event("step", {"epoch": st.epoch, "step": st.step, "loss": loss, "lr": lr, "elapsed": st.elapsed,
                               "steps_per_epoch": spe, "t_end": self.budget.end(),
                               "images_per_s": run.batch_size * self.world / max(dt, 1e-9)})
        return failed

    def validate(self) -> bool:
        """Validate, record, checkpoint. False: stopped by a signal between two images (nothing recorded)."""
        run, st, budget = self.run_, self.st, self.budget
        self.sync()  # BatchNorm statistics averaged over the ranks: every rank validates the same net
        self.on_event("validating", {"images": len(run.val_images), "expected_s": budget.val_s, "elapsed": self.now()})
        tv = self.clock()
        stop = self.should_stop if self.world == 1 else None  # ranks must run the same calls: they stop next turn
        first_planned = run.plan is not None and budget.validations == 0 and bool(budget.seconds)
        per_image: list | None = [] if first_planned else None  # a replan may score a subset of them again
        m = evaluate_images(self.trainer.predict, run.val_images, run.val_masks, run.spec, run.meta.mean,
                            run.meta.std, run.meta.scale, run.spec.num_classes, run.ignore, run.meta.tta,
                            should_stop=stop, per_image=per_image)
        if m is None:
            return False
        self.metrics = m
        took = self.agree_s(self.clock() - tv)
        budget.validated(st.step, took)
        st.elapsed = self.now()
        replanned, rescored = self.replan(took, per_image) if first_planned else (None, None)
        spe = budget.steps_per_epoch
        st.epoch = st.step // spe if spe else st.epoch  # epochs whose validation is done
        epoch = (st.step // spe if st.step % spe == 0 else round(st.step / spe, 2)) if spe else None
        row = {"validation": budget.validations, "epoch": epoch, "step": st.step,
               "lr": self.lr(st.step, st.elapsed), "train_loss": st.loss_sum / st.batch if st.batch else None,
               "val_loss": m["loss"], "pixel_accuracy": m["pixel_accuracy"], "mean_iou": m["mean_iou"],
               "seconds": round(st.elapsed, 2), "val_seconds": round(took, 3),
               **{f"iou_{c}": v for c, v in zip(run.meta.classes, m["iou"])}}
        st.history.append(row)
        st.loss_sum, st.batch = 0.0, 0
        miou = m["mean_iou"]
        best = miou > st.best_miou if math.isfinite(miou) else st.best_miou < 0  # NaN: only while none is better
        if best:
            st.best_miou = miou if math.isfinite(miou) else st.best_miou
            self.save("best", m)
        if rescored is not None:  # the validations to come run on a subset: the best so far, scored on it alike
            st.best_miou = rescored
        self.save("last", m)
        if self.rank == 0:
            write_metrics(self.out_dir, st.history)
            write_trace(self.out_dir, st.trace)
            write_curves(self.out_dir, st.history, st.trace)
        self.on_event("epoch", {**row, "iou": m.get("iou"), "best": best, "val_seconds": took})
        if replanned:
            self.on_event("note", {"text": replanned})
        return True

    def replan(self, took: float, per_image: list | None) -> tuple[str | None, float | None]:
        """The first validation measured against the plan's estimate: off by more than plan_budget.VAL_SLACK, or
        leaving too little of the validation share for the final one, the validation points still to come are spread
        again over what is left (plan_budget.replan_after_validation) and plan.json is written again. Where the plan
        now validates fewer images, the rest of the run validates an evenly spaced subset of the images validated so
        far, and this validation's mIoU on that subset (from per_image, its confusions) is what the next ones must
        beat. Returns (the reason or None: the estimate held, that mIoU or None). Every rank replans alike: the
        seconds it uses are the ranks' agreed ones."""
        from cvtool.metrics import mean_iou
        from cvtool.train.plan_budget import replan_after_validation
        from cvtool.train.prepare import val_subset

        run, budget = self.run_, self.budget
        assert run.plan is not None
        q = replan_after_validation(run.plan, took, spent_val_s=budget.val_spent,
                                    elapsed_s=self.agree_s(self.st.elapsed), done=1, steps_done=self.st.step)
        if q is None:
            return None, None
        rescored, shrunk = None, q.val_fraction < run.plan.val_fraction
        if shrunk:
            keep = val_subset(len(run.val_images), q.val_fraction / run.plan.val_fraction)
            run.val_images = [run.val_images[i] for i in keep]
            run.val_masks = [run.val_masks[i] for i in keep]
            score = float(mean_iou(sum(per_image[i] for i in keep))) if per_image else math.nan
            rescored = score if math.isfinite(score) else None
        run.plan, budget.val_at, budget.val_s = q, list(q.val_at), q.val_s
        self.write_plan()
        why = q.reasons["val_at"] + ("; " + q.reasons["val_fraction"] if shrunk else "")
        return why, rescored

    def summary(self, stopped: str, waited: float) -> dict[str, Any]:
        run, st, m = self.run_, self.st, self.metrics
        spe = self.budget.steps_per_epoch
        return {"status": stopped, "stop_reason": "epochs" if stopped == STOP_DONE else "time", "out": str(self.out_dir),
                "epochs": st.step // spe if spe else None, "steps": st.step, "seconds": round(st.elapsed, 2),
                "train_seconds": round(self.t_train, 2), "val_seconds": round(self.budget.val_spent, 2),
                "data_wait_share": round(waited / max(waited + self.t_train, 1e-9), 4),
                "best_mean_iou": st.best_miou, "final": st.history[-1] if st.history else None, "iou": m.get("iou"),
                "absent_classes": m.get("absent", []), "classes": list(run.meta.classes),
                "confusion": m.get("confusion"), "validations": self.budget.validations,
                "plan": run.plan.to_dict() if run.plan else None,
                "fingerprint": run.fingerprint.to_dict() if run.fingerprint is not None else None}
