"""`cvtool bench`'s document as a rich table (split in two on a narrow terminal), Markdown, CSV and a plot."""

from __future__ import annotations

from pathlib import Path

from cvtool.cli.output import err, fmt_float, out, safe, table

COLUMNS = ["backend", "input", "status", "providers", "threads", "p50 ms/img", "p90 ms/img", "spread", "img/s",
           "peak MB", "GFLOP/s", "% GEMM", "% own GEMM", "x fp32", "max abs diff", "max rel diff", "labels =", "mIoU"]


def _cells(doc: dict) -> tuple[list[str], list[list[str]]]:
    """The table's columns and text cells (rich and Markdown alike); label and mIoU columns only where they mean something."""
    cols = [c for c in COLUMNS if not (c == "labels =" and doc["mode"] == "op")
            and not (c == "mIoU" and "data" not in doc)
            and not (c == "x fp32" and all(r.get("precision", "fp32") == "fp32" for r in doc["rows"]))]

    def f(v, fmt):
        return "-" if v is None else fmt(v)

    own = doc["gemm"].get("own", {})

    def own_fraction(r):  # the row against its own library's GEMM (what that backend can reach with its BLAS)
        rate = own.get(r["backend"]) if r["device"] == "cpu" else None
        return r["gflops"] / rate if rate and r["gflops"] else None

    rows = []
    for r in doc["rows"]:
        prov = ", ".join(p.replace("ExecutionProvider", "") for p in r["providers"]) if r["providers"] else "-"
        p = r.get("precision", "fp32")
        cell = {"backend": f"{r['backend']}/{r['device']}" + ("" if p == "fp32" else f" {p}"),
                "x fp32": f(r.get("vs_fp32"), lambda v: f"{v:.2f}x"), "input": f(r["input"], lambda v: "x".join(map(str, v))),
                "status": r["status"], "providers": prov, "threads": f(r["threads"], str),
                "p50 ms/img": f(r["p50_ms"], fmt_float), "p90 ms/img": f(r["p90_ms"], fmt_float),
                "spread": f(r["spread"], lambda v: f"{v:.1%}"), "img/s": f(r["images_per_s"], fmt_float),
                "peak MB": f(r["peak_mem_mb"], lambda v: f"{v:.1f}"), "GFLOP/s": f(r["gflops"], fmt_float),
                "% GEMM": f(r["gemm_fraction"], lambda v: f"{v:.0%}"),
                "% own GEMM": f(own_fraction(r), lambda v: f"{v:.0%}"), "max abs diff": f(r["max_abs_diff"], fmt_float),
                "max rel diff": f(r["max_rel_diff"], fmt_float),
                "labels =": f(r["label_agreement"], lambda v: f"{v:.4%}"), "mIoU": f(r["miou"], lambda v: f"{v:.4f}")}
        rows.append([cell[c] for c in cols])
    return cols, rows


def _header(doc: dict) -> list[str]:
    s = doc["settings"]
    lines = [doc["title"]]
    if doc["mode"] == "network":
        gf = ", ".join(f"{k}x{k}: {v:.3g}" for k, v in doc["gflop_per_image"].items())
        lines.append(f"{doc['params']:,} parameters; GFLOP per image {gf}")
        if "data" in doc:
            lines.append(f"mIoU on {doc['data_images']} images of {doc['data']}; float64 reference: "
                         f"{fmt_float(doc['reference_miou'], 4)}")
    g = doc["gemm"]
    if g["measured"]:
        by_source: dict[tuple[str, str], list[str]] = {}  # one entry per source, its rounds' rates joined by "/"
        for m in g["measured"]:
            by_source.setdefault((m["how"], m["device"]), []).append(f"{m['gflops']:.1f}")
        rates = "; ".join(f"{how} on {dev}: {'/'.join(v)} GFLOP/s" for (how, dev), v in by_source.items())
        best = ", ".join(f"{d} {v:.1f}" for d, v in g["rate"].items())
        lines.append(f"float32 GEMM {g['n']}x{g['n']}: {rates}; 100% GEMM = {best} GFLOP/s (the best library here, "
                     f"the same threads)")
        peak = (g.get("peak") or {}).get("cpu") or {}
        if peak.get("gflops"):
            lines.append(f"CPU float32 peak {peak['gflops']:.0f} GFLOP/s ({peak['how']})")
    m = doc["machine"]
    load = m["load_1min"]
    busy = f"; load average {load['start']:.2f} at start, {load['end']:.2f} at end" if load["start"] is not None else ""
    lines.append(f"Machine: {m['cpu']}, {m['cpus']} CPUs, Python {m['python']}{busy}")
    rounds = s.get("rounds", 1)
    taken = f", in {rounds} rounds taking turns (each row's calls pooled)" if rounds > 1 else ""
    lines.append(f"threads: {s['threads']}; warm-up {s['warmup']} calls, then >= {s['min_time']:g} s and >= 3 calls "
                 f"per row{taken}")
    return lines


def _footer(doc: dict) -> list[str]:
    def label(r: dict) -> str:
        p = r.get("precision", "fp32")
        return f"{r['backend']}/{r['device']}" + ("" if p == "fp32" else f" {p}")

    why = [f"{label(r)}: {r['status']}: {r['reason']}" for r in doc["rows"] if r["reason"]]
    return why + doc["notes"]


SPEED = ("status", "providers", "threads", "p50 ms/img", "p90 ms/img", "spread", "img/s", "peak MB", "GFLOP/s", "% GEMM",
         "% own GEMM", "x fp32")


def render(doc: dict) -> None:
    """One table; on a terminal too narrow for it, two (speed, then agreement), each keyed by backend and input.
    Into a file or pipe the table keeps its natural width (rich would squash it to 80 columns)."""
    con = out()
    cols, rows = _cells(doc)
    need = 1 + sum(3 + max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)) if rows else 0
    width = con.width
    if not con.is_terminal:
        con.width = max(width, need)
    try:
        for line in _header(doc):
            con.print(line)
        title = "Bench: speed and agreement with the float64 NumPy reference"
        if need <= con.width:
            con.print(table(title, cols, rows))
        else:
            for part, keep in (("speed", lambda c: c in SPEED), ("agreement", lambda c: c not in SPEED or c == "status")):
                idx = [i for i, c in enumerate(cols) if i < 2 or keep(c)]
                con.print(table(f"{title}: {part}", [cols[i] for i in idx], [[r[i] for i in idx] for r in rows]))
        for line in _footer(doc):
            con.print(f"[dim]{line}[/]")
        if not any(r["status"] != "unavailable" for r in doc["rows"]):
            con.print("[bold yellow]nothing was measured[/]")
        else:
            con.print("[bold green]all rows agree[/]" if doc["ok"] else "[bold red]MISMATCH or FAILED rows (see above)[/]")
    finally:
        con.width = width


def write_markdown(doc: dict, path: Path) -> None:
    from cvtool.fsutil import atomic_write_bytes

    cols, rows = _cells(doc)
    head = _header(doc)
    lines = [f"## cvtool bench: {head[0]}", "", *(f"{line}  " for line in head[1:]), "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    lines += ["", *(f"- {line}" for line in _footer(doc))]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    err().print(f"wrote {safe(path)}")


def write_csv(doc: dict, path: Path) -> None:
    import csv
    import io

    from cvtool.fsutil import atomic_write_bytes

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(doc["rows"][0]) if doc["rows"] else ["backend"], lineterminator="\n")
    w.writeheader()
    for r in doc["rows"]:
        w.writerow({k: ";".join(map(str, v)) if isinstance(v, list) else v for k, v in r.items()})
    atomic_write_bytes(path, buf.getvalue().encode())
    err().print(f"wrote {safe(path)}")


def write_plot(doc: dict, path: Path) -> None:
    """Latency per image (left) and images/s (right) against the input size, one line per backend/device and batch."""
    from cvtool.plot import line_chart

    sizes = doc["settings"]["sizes"]
    lat: dict[str, list] = {}
    thr: dict[str, list] = {}
    for r in doc["rows"]:
        if r["p50_ms"] is None or r["backend"] == "onnx.reference":
            continue
        p = r.get("precision", "fp32")
        key = f"{r['backend']}/{r['device']}{'' if p == 'fp32' else ' ' + p} b{r['input'][0]}"
        lat.setdefault(key, [None] * len(sizes))[sizes.index(r["input"][2])] = r["p50_ms"]
        thr.setdefault(key, [None] * len(sizes))[sizes.index(r["input"][2])] = r["images_per_s"]
    line_chart(path, sizes, lat, thr, title=f"ms per image (left), images/s (right): {doc['title'][:40]}",
               xlabel="input size")
    err().print(f"wrote {safe(path)}")


__all__ = ["render", "write_markdown", "write_csv", "write_plot"]
