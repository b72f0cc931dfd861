"""`cvtool train --data D --time T` against the plain PyTorch peer (../shared/baselines/plain_unet.py), side by side.

    python benchmarks/own_data.py [--time 300] [--seeds 0,1] [--datasets membrane,oxford_pets3,busi_ultrasound]
        [--out benchmarks/results/own_data.json] [--markdown FILE] [--only cvtool|baseline] [--report-only]

Same data, same split (cvtool's, for each seed: the baseline gets it as DIR/train + DIR/val of symlinks), same
wall-clock budget; the two run one after the other (which goes first alternates per seed). Wall clock is of the whole
process, from Popen to exit. cvtool's score is checked independently: `cvtool segment` on the val images with
RUNDIR/best.safetensors, scored here with the baseline's evaluate() rules (one confusion matrix over all val pixels,
255 ignored except in binary 0/255 mask sets, mean IoU over the classes with a non-empty union).
Targets: cvtool mIoU (independent) >= baseline mIoU + 0.03, and cvtool wall clock <= 1.05 x budget.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CVTOOL_SHARED", ROOT.parent / "shared"))  # a worktree elsewhere: set it
BASELINE = SHARED / "baselines" / "plain_unet.py"
MIOU_MARGIN, WALL_FACTOR = 0.03, 1.05
PREC = (4, 4, 0, 2, 1, 4, 4, 4, 0, 2, 1, 4)  # decimals of the table's columns after the seed
BASELINE_KEYS = ("pixel_accuracy", "mean_iou", "steps", "seconds", "train", "val", "classes")
CVTOOL_KEYS = ("best_mean_iou", "final", "steps", "seconds", "epochs", "plan", "stop_reason", "data_wait_share",
               "val_seconds", "validations", "train_seconds")


def log(msg: str) -> None:
    print(f"[own_data {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict:
    """CPU model, cores, OPENBLAS_CORETYPE, torch version (asked of a subprocess: this script needs no torch), date."""
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), platform.machine())
    torch_v = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                             capture_output=True, text=True).stdout.strip() or None
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
            "torch": torch_v, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def cvtool_split(data: Path, seed: int) -> tuple[list, list]:
    """cvtool's own train/val items for this seed (the core only, no framework)."""
    sys.path.insert(0, str(ROOT))
    from cvtool.data import open_datasets
    tr, va, _ = open_datasets(str(data), val_split=0.2, seed=seed)
    return [it for it in tr.items if it.mask is not None], [it for it in va.items if it.mask is not None]


def link_split(tr: list, va: list, dest: Path) -> None:
    """DIR/{train,val}/{images,masks} of symlinks to the original files."""
    for part, items in (("train", tr), ("val", va)):
        for sub in ("images", "masks"):
            (dest / part / sub).mkdir(parents=True)
        for it in items:
            (dest / part / "images" / it.image.name).symlink_to(it.image.resolve())
            (dest / part / "masks" / it.mask.name).symlink_to(it.mask.resolve())


def run_timed(cmd: list[str], timeout: float) -> tuple[int, str, str, float]:
    """(returncode, stdout, stderr, wall seconds from Popen to exit); returncode -9 when it ran past timeout."""
    log("$ " + " ".join(cmd if len(cmd) < 16 else cmd[:6] + [f"... ({len(cmd) - 10} more) ..."] + cmd[-4:]))
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    return p.returncode, out, err, time.perf_counter() - t0


def parse_json(text: str) -> dict | None:
    try:
        return json.loads(text)
    except ValueError:
        start = text.find("{")
        try:
            return json.loads(text[start:]) if start >= 0 else None
        except ValueError:
            return None


def score(pairs: list[tuple[Path, Path]], binary: bool) -> dict:
    """Pixel accuracy and mIoU of (predicted mask, true mask) pairs, as the baseline's evaluate() counts them."""
    conf = np.zeros((256, 256), np.int64)
    for pred_path, true_path in pairs:
        pred = np.asarray(Image.open(pred_path), np.int64)
        y = np.asarray(Image.open(true_path), np.uint8).astype(np.int64)
        y = (y == 255).astype(np.int64) if binary else y
        if pred.shape != y.shape:
            raise ValueError(f"{pred_path}: shape {pred.shape} != mask {y.shape}")
        keep = y != 255
        conf += np.bincount(y[keep] * 256 + pred[keep], minlength=256 * 256).reshape(256, 256)
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    iou = tp[union > 0] / union[union > 0]
    return {"pixel_accuracy": float(tp.sum() / max(conf.sum(), 1)), "mean_iou": float(iou.mean()) if iou.size else None}


def is_binary(items: list) -> bool:
    """The baseline's rule: every mask (train and val) holds only 0 and 255."""
    return all(set(np.unique(np.asarray(Image.open(it.mask)))) <= {0, 255} for it in items)


def run_baseline(tr: list, va: list, T: float, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="own_data_split_") as tmp:
        link_split(tr, va, Path(tmp))
        cmd = [sys.executable, str(BASELINE), tmp, "--time", str(T), "--seed", str(seed), "--json"]
        rc, out, err, wall = run_timed(cmd, timeout=3 * T + 300)
    res = {"rc": rc, "wall_s": round(wall, 2), "stderr_tail": err.strip()[-600:]}
    s = parse_json(out) if rc == 0 else None
    if s is None:
        return {**res, "error": (err or out).strip()[-1500:]}
    return {**res, **{k: s.get(k) for k in BASELINE_KEYS}}


def arm_flags(side: str) -> list[str]:
    """The flags an arm adds: `cvtool` none, `cvtool-X` --encoder X, `cvtool-X@F` also --encoder-lr F, and
    `cvtool+--flag=V+--other=W` any train flags (the plan's other values measured one at a time)."""
    if side.startswith("cvtool+"):
        return [t for kv in side.split("+")[1:] for t in kv.split("=", 1)]
    enc, _, lr = side.partition("-")[2].partition("@")
    return (["--encoder", enc] if enc else []) + (["--encoder-lr", lr] if lr else [])


def run_cvtool(data: Path, tr: list, va: list, T: float, seed: int, flags: list[str] | None = None) -> dict:
    """No flag but --data, --time (and --seed, --out, --json); an arm's own flags (arm_flags) after them."""
    with tempfile.TemporaryDirectory(prefix="own_data_cvtool_") as tmp:
        rundir, segdir = Path(tmp) / "run", Path(tmp) / "seg"
        cmd = [sys.executable, "-m", "cvtool", "train", "--data", str(data), "--time", str(T), "--seed", str(seed),
               "--out", str(rundir), "--json", *(flags or [])]
        rc, out, err, wall = run_timed(cmd, timeout=3 * T + 300)
        res = {"rc": rc, "wall_s": round(wall, 2), "stderr_tail": err.strip()[-600:]}
        s = parse_json(out) if rc == 0 else None
        if s is None:
            return {**res, "error": (err or out).strip()[-1500:]}
        res.update({k: s[k] for k in CVTOOL_KEYS if k in s})
        res["independent"] = check_cvtool(rundir / "best.safetensors", segdir, tr, va)
    return res


def check_cvtool(model: Path, segdir: Path, tr: list, va: list) -> dict:
    """`cvtool segment` the val images with the best checkpoint, then score the written masks here."""
    cmd = [sys.executable, "-m", "cvtool", "segment", *[str(it.image) for it in va], "--model", str(model),
           "--out", str(segdir), "--json"]
    rc, out, err, wall = run_timed(cmd, timeout=1800)
    doc = parse_json(out) if rc == 0 else None
    if doc is None:
        return {"error": f"segment exit {rc}: " + (err or out).strip()[-1000:]}
    masks = {str(Path(r["image"])): Path(r["mask"]) for r in doc.get("images", [])}
    missing = [it.name for it in va if str(it.image) not in masks]
    if missing:
        return {"error": f"segment wrote no mask for {missing[:5]} ({len(missing)} in all)"}
    try:
        got = score([(masks[str(it.image)], it.mask) for it in va], is_binary(tr + va))
    except ValueError as e:
        return {"error": str(e)}
    return {**got, "segment_wall_s": round(wall, 2), "pixel_ratio": doc.get("pixel_ratio")}


def save(doc: dict, path: Path) -> None:
    """Atomic: a temp file beside it, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)


def load_results(path: Path, T: float) -> dict:
    """The results file to add to: the existing one when it measured the same budget, else a fresh one."""
    if path.exists():
        doc = json.loads(path.read_text())
        if doc.get("budget_s") == T:
            return doc
        log(f"{path} holds budget {doc.get('budget_s')} s, not {T} s: starting a fresh file")
    return {"budget_s": T, "machine": machine(), "runs": {}}


def measure(a: argparse.Namespace, doc: dict, out: Path) -> None:
    sides = [a.only] if a.only else a.arms.split(",")
    doc["machine"] = machine()
    for name in a.datasets.split(","):
        data = SHARED / "datasets" / name
        for k, seed in enumerate(int(s) for s in a.seeds.split(",")):
            try:
                tr, va = cvtool_split(data, seed)
            except Exception as e:  # a dataset cvtool cannot open: say so, go on with the others
                log(f"{name} seed {seed}: cannot open ({type(e).__name__}: {e}); skipped")
                continue
            log(f"{name} seed {seed}: {len(tr)} train / {len(va)} val")
            for i, side in enumerate(sides if k % 2 == 0 else sides[::-1]):
                key = f"{name}/{seed}/{side}"
                if a.skip_done and key in doc["runs"] and "error" not in doc["runs"][key]:
                    log(f"{key}: measured already ({doc['runs'][key].get('date')}), kept")
                    continue
                if i:
                    time.sleep(a.pause)
                load = os.getloadavg()[0]
                res = (run_baseline(tr, va, a.time, seed) if side == "baseline" else
                       run_cvtool(data, tr, va, a.time, seed, arm_flags(side)))
                res.update(load_at_start=round(load, 2), date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
                doc["runs"][key] = res
                save(doc, out)
                log(f"{name} seed {seed} {side}: " + ("FAILED " + res["error"][-300:] if "error" in res else
                    f"mIoU {fmt(miou(side, res))}, {res.get('steps')} steps, wall {res['wall_s']} s"))
            time.sleep(a.pause)


def miou(side: str, r: dict | None) -> float | None:
    """The mIoU compared: the baseline's own, cvtool's independent check."""
    if not r or "error" in r:
        return None
    return r.get("mean_iou") if side == "baseline" else (r.get("independent") or {}).get("mean_iou")


def fmt(v, p: int = 4) -> str:
    return "–" if v is None else f"{v:.{p}f}" if isinstance(v, float) else str(v)


def rate(r: dict) -> float | None:
    return r["steps"] / r["seconds"] if r.get("steps") and r.get("seconds") else None


def last_line(text: str) -> str:
    return (text.strip().splitlines() or ["(no output)"])[-1][:200]


def mean(vs: list) -> float | None:
    vs = [v for v in vs if v is not None]
    return sum(vs) / len(vs) if vs else None


def render(doc: dict) -> str:
    T, m, runs = doc["budget_s"], doc["machine"], doc["runs"]
    lines = [f"## Own data: `cvtool train --data D --time {T:g}` vs the plain PyTorch U-Net\n",
             f"Machine: {m['cpu']}, {m['cores']} cores, OPENBLAS_CORETYPE={m['openblas_coretype']}, "
             f"torch {m['torch']}, Python {m['python']}; {m['date']}. Budget {T:g} s each, run one after the other; "
             "wall = whole process, Popen to exit.",
             "cvtool mIoU: own = its `best_mean_iou` (else final); indep. = `cvtool segment` with best.safetensors on "
             "the val images, scored like the baseline's evaluate(). Δ = indep. − baseline. "
             "steps/s = steps / the seconds each reports.\n"]
    head = ("| seed | base acc | base mIoU | base steps | base steps/s | base wall s | cvtool acc (indep.) "
            "| cvtool mIoU own | cvtool mIoU indep. | cvtool steps | cvtool steps/s | cvtool wall s | Δ mIoU |")
    for name in dict.fromkeys(k.split("/")[0] for k in runs):
        seeds = sorted({int(k.split("/")[1]) for k in runs if k.startswith(name + "/")})
        lines += [f"### {name}\n", head, "|" + "---|" * 13]
        deltas, walls, rows, notes = [], [], [], []
        for s in seeds:
            b, c = runs.get(f"{name}/{s}/baseline") or {}, runs.get(f"{name}/{s}/cvtool") or {}
            for side, r in (("baseline", b), ("cvtool", c)):
                if "error" in r:
                    notes.append(f"seed {s} {side} failed (exit {r.get('rc')}): `{last_line(r['error'])}`")
            b, c = ({} if "error" in r else r for r in (b, c))  # a failed run adds nothing to the table
            bm, cm = miou("baseline", b), miou("cvtool", c)
            d = cm - bm if bm is not None and cm is not None else None
            deltas.append(d)
            walls.append(c.get("wall_s"))
            ind = c.get("independent") or {}
            own = c.get("best_mean_iou", (c.get("final") or {}).get("mean_iou"))
            row = [b.get("pixel_accuracy"), bm, b.get("steps"), rate(b), b.get("wall_s"), ind.get("pixel_accuracy"),
                   own, cm, c.get("steps"), rate(c), c.get("wall_s"), d]
            rows.append(row)
            lines.append(f"| {s} | " + " | ".join(fmt(v, p) for v, p in zip(row, PREC)) + " |")
            if "error" in ind:
                notes.append(f"seed {s} cvtool independent check failed: `{last_line(ind['error'])}`")
            if "plan" in c:
                p = c["plan"]
                keys = ("encoder", "frozen_bn", "scale", "crop", "batch_size", "depth", "lr", "augment", "tta", "p_focus")
                shown = ", ".join(f"{k} {p[k]}" for k in keys if k in p)
                notes.append(f"seed {s} cvtool plan: {shown}; {c.get('validations', c.get('epochs'))} validations; stop: "
                             f"{c.get('stop_reason')}; the step waited for data {100 * (c.get('data_wait_share') or 0):.2f}% "
                             f"of its time")
        mrow = [mean([r[j] for r in rows]) for j in range(12)]
        if len(rows) > 1:
            lines.append("| mean | " + " | ".join(fmt(v, p) for v, p in zip(mrow, PREC)) + " |")
        lines.append("")
        md, n_d = mrow[11], sum(d is not None for d in deltas)
        ok_m = "–" if md is None else "holds" if md >= MIOU_MARGIN else "FAILS"
        known = [w for w in walls if w is not None]
        ok_w = "–" if not known else "holds" if max(known) <= WALL_FACTOR * T else "FAILS"
        lines.append(f"Targets: mIoU (mean Δ over {n_d} seed(s) {fmt(md)} >= {MIOU_MARGIN}) **{ok_m}**; "
                     f"wall clock (max cvtool "
                     f"{fmt(max(known) if known else None, 1)} s <= {WALL_FACTOR * T:g} s) **{ok_w}**.\n")
        lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    return "\n".join(lines).rstrip() + "\n"


def arms_of(runs: dict) -> list[str]:
    """The cvtool arms the results hold, the plain `cvtool` first."""
    arms = sorted({k.split("/")[2] for k in runs if k.split("/")[2] != "baseline"})
    return sorted(arms, key=lambda a: (a != "cvtool", a))


def plan_cell(p: dict | None, arm: str = "cvtool") -> str:
    if not p:
        return "–"
    enc = p.get("encoder") or (arm_flags(arm) + [None, "unet"])[1]  # a plan written before the field: the arm's
    return (f"{enc}, x{p.get('scale')}, {p.get('crop')} px x {p.get('batch_size')}, "
            f"depth {p.get('depth')}")


def render_summary(doc: dict) -> str:
    """One row per dataset and cvtool arm, seeds averaged: the plan's key values, steps, validation seconds planned
    against spent, net pixels / image pixels, mIoU both sides, wall clock; then issue 18's and 19's targets."""
    T, runs = doc["budget_s"], doc["runs"]
    names = list(dict.fromkeys(k.split("/")[0] for k in runs))
    lines = [f"### All datasets, {T:g} s (seeds averaged where there are two)\n",
             "val planned = the plan's seconds per validation x validations planned; spent = what the run's "
             "validations took; net px / image px = what `cvtool segment` ran on the val images over their pixels "
             "(tiles, padding; before test-time augmentation).\n"]
    for arm in arms_of(runs):
        lines += [f"#### `{arm}`" + (" (no flag but --data and --time)" if arm == "cvtool" else
                                      f" ({' '.join(arm_flags(arm))})") + "\n",
                  "| dataset | plan (encoder, scale, crop x batch, depth) | steps | val planned s | val spent s "
                  "| val % of budget | net px / image px | baseline mIoU | cvtool mIoU | Δ | wall s |",
                  "|" + "---|" * 11]
        deltas, bad_wall, bad_val, below = [], [], [], []
        for name in names:
            seeds = sorted({int(k.split("/")[1]) for k in runs if k.startswith(name + "/")})
            rows = []
            for sd in seeds:
                b, c = runs.get(f"{name}/{sd}/baseline") or {}, runs.get(f"{name}/{sd}/{arm}") or {}
                if not c or "error" in c:
                    continue
                p = c.get("plan") or {}
                planned = (p.get("val_s") or 0) * len(p.get("val_at") or [])
                bm, cm = miou("baseline", b), miou("cvtool", c)
                rows.append([plan_cell(p, arm), c.get("steps"), planned, c.get("val_seconds"),
                             100 * (c.get("val_seconds") or 0) / T, (c.get("independent") or {}).get("pixel_ratio"),
                             bm, cm, None if bm is None or cm is None else cm - bm, c.get("wall_s")])
            if not rows:
                continue
            m = [rows[0][0]] + [mean([r[j] for r in rows]) for j in range(1, 10)]
            d, wall, vshare = m[8], max(r[9] for r in rows if r[9] is not None), max(r[4] for r in rows)
            deltas.append(d)
            if d is not None and d < -0.01:
                below.append(name)
            if wall > T * WALL_FACTOR + 15:
                bad_wall.append(name)
            if vshare > 12:
                bad_val.append(name)
            prec = (0, 0, 1, 1, 1, 3, 4, 4, 4, 1)
            lines.append(f"| {name} | " + " | ".join(fmt(v, q) if not isinstance(v, str) else v
                                                      for v, q in zip(m, prec)) + " |")
        md = mean(deltas)
        lines += ["", f"Targets: no dataset below the baseline - 0.01: **{'holds' if not below else 'FAILS: ' + ', '.join(below)}**; "
                      f"mean gain over {len(deltas)} dataset(s) {fmt(md)} (issue 18: >= +0.05, issue 19: >= +0.10); "
                      f"wall <= {T * WALL_FACTOR + 15:g} s: **{'holds' if not bad_wall else 'FAILS: ' + ', '.join(bad_wall)}**; "
                      f"validation <= 12% of the budget: **{'holds' if not bad_val else 'FAILS: ' + ', '.join(bad_val)}**.\n"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time", type=float, default=300.0, help="wall-clock budget per run, seconds")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--datasets", default="membrane,oxford_pets3,busi_ultrasound")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "own_data.json")
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--only", choices=["cvtool", "baseline"])
    ap.add_argument("--arms", default="baseline,cvtool",
                    help="what runs, in order: baseline, cvtool (the plan decides everything), cvtool-ENCODER "
                         "(cvtool with --encoder ENCODER), cvtool-ENCODER@F (and --encoder-lr F), "
                         "cvtool+--FLAG=V+... (any train flags)")
    ap.add_argument("--skip-done", action="store_true", help="keep the runs --out already holds (no error)")
    ap.add_argument("--pause", type=float, default=5.0, help="seconds between runs")
    ap.add_argument("--report-only", action="store_true", help="re-render the markdown from --out, run nothing")
    a = ap.parse_args()
    if a.report_only:
        doc = json.loads(a.out.read_text())
    else:
        doc = load_results(a.out, a.time)
        measure(a, doc, a.out)
        log(f"wrote {a.out}")
    md = render(doc) + "\n" + render_summary(doc)
    if a.markdown:
        a.markdown.parent.mkdir(parents=True, exist_ok=True)
        a.markdown.write_text(md)
        log(f"wrote {a.markdown}")
    else:
        sys.stdout.write(md)


if __name__ == "__main__":
    main()
