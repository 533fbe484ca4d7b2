"""Markdown tables and figures (FROC curve, slide scores by kind) of :func:`evaluate_slides` results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wsi_pipeline.evaluation.plots import _figure, _save
from wsi_pipeline.evaluation.slide_metrics import KINDS


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci(ci: list[float] | None, digits: int = 3) -> str:
    return "" if not ci else f"{ci[0]:.{digits}f}-{ci[1]:.{digits}f}"


def _prop(p: dict[str, Any]) -> tuple[str, str]:
    if not p or not p.get("n"):
        return "n/a", ""
    return f"{p['k']}/{p['n']} ({100 * p['rate']:.0f} %)", _ci(p["ci95"], 2)


def format_markdown(result: dict[str, Any], per_slide: bool = False) -> str:
    """The summary table, the confusion matrix and (optionally) one row per slide, as Markdown."""
    froc, det, neg = result["froc"], result["lesion_detection"], result["negative_slides"]
    size, recall = result["size_error"], result["tissue_recall"]
    counts = ", ".join(f"{n} {k}" for k, n in result["counts"].items())
    rows = [
        ("slide AUC, micro+macro vs negative", _num(result["auc"]["value"]), _ci(result["auc"]["ci95"])),
        ("slide AUC, ITC vs negative", _num(result["auc_itc"]["value"]), _ci(result["auc_itc"]["ci95"])),
        ("negative slides called micro/macro", *_prop(neg["called_micro_or_macro"])),
        ("false-positive regions per negative slide", _num(neg["fp_regions_per_slide"], 2), ""),
        (f"FROC score (lesions within {froc['tolerance_um']:g} um)", _num(froc["score"]), _ci(froc["ci95"])),
        ("micro lesions detected", *_prop(det["micro"])),
        ("macro lesions detected", *_prop(det["macro"])),
        ("micro slides called micro", *_prop(det["micro_slides_called_micro"])),
        ("macro slides called macro", *_prop(det["macro_slides_called_macro"])),
        (
            "largest-lesion size error, mean / max",
            f"{_pct(size.get('mean_abs'))} / {_pct(size.get('max_abs'))}",
            "",
        ),
        (
            "tissue recall, pooled (min slide)",
            f"{_pct(recall.get('pooled'))} ({_pct(recall.get('min'))})",
            "",
        ),
    ]
    if "tumour_cells" in recall:
        cells = recall["tumour_cells"]
        rows.append(("tumour cells not analysed", f"{cells['missed']} of {cells['placed']}", ""))
        rows.append(("glass cells analysed", str(recall["glass_cells_analysed"]), ""))
    lines = [f"{result['n_slides']} slides ({counts}).", "", "| metric | value | 95 % CI |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {ci} |" for name, value, ci in rows]
    rates = " | ".join(f"{r:g}" for r in froc["rates"])
    sens = " | ".join(_num(s, 2) for s in froc["sensitivity"])
    lines += ["", f"| FP per slide | {rates} |", "|---" * (len(froc["rates"]) + 1) + "|"]
    lines += [f"| lesion sensitivity | {sens} |"]
    conf = result["confusion"]
    lines += [
        "",
        "| true \\ called | " + " | ".join(conf["cols"]) + " |",
        "|---" * (len(conf["cols"]) + 1) + "|",
    ]
    lines += [
        f"| {k} | " + " | ".join(map(str, row)) + " |"
        for k, row in zip(conf["rows"], conf["matrix"], strict=True)
    ]
    if per_slide:
        lines += ["", "| slide | kind | score | call | detections | FP | true mm | called mm |"]
        lines += ["|---|---|---|---|---|---|---|---|"]
        for s in result["slides"]:
            lines.append(
                f"| {s['slide']} | {s['kind']} | {_num(s['score'])} | {s['call']} | {s['n_detections']} | "
                f"{s['n_fp']} | {_num(s['true_largest_mm'], 2)} | {_num(s['called_largest_mm'], 2)} |"
            )
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def plot_froc(result: dict[str, Any], path: Path | str) -> Path:
    """The FROC step curve (lesion sensitivity vs false positives per slide, log x) with its score."""
    plt = _figure()
    froc = result["froc"]
    fps = np.asarray(froc["curve"]["fp_per_slide"], dtype=np.float64)
    sens = np.asarray([np.nan if s is None else s for s in froc["curve"]["sensitivity"]], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(5, 4))
    try:
        ax.step(np.maximum(fps, 1e-2), sens, where="post", lw=2, label=f"FROC score {_num(froc['score'])}")
        for rate, s in zip(froc["rates"], froc["sensitivity"], strict=True):
            if s is not None:
                ax.plot(rate, s, "o", color="C1")
        ax.set_xscale("log")
        ax.set(
            xlim=(0.1, 16), ylim=(0, 1.02), xlabel="False positives per slide", ylabel="Lesion sensitivity"
        )
        ax.set_title(f"FROC, {froc['n_lesions']} micro/macro lesions")
        ax.legend(loc="lower right")
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


def plot_scores(result: dict[str, Any], path: Path | str) -> Path:
    """Slide scores by true kind (one dot per slide), with each slide's call as the marker."""
    plt = _figure()
    markers = {"none": "o", "itc": "s", "micro": "^", "macro": "D"}
    fig, ax = plt.subplots(figsize=(5, 4))
    try:
        rng = np.random.default_rng(0)
        for call, marker in markers.items():
            pts = [(KINDS.index(s["kind"]), s["score"]) for s in result["slides"] if s["call"] == call]
            pts = [(x, y) for x, y in pts if y is not None]
            if pts:
                x, y = np.asarray(pts, dtype=np.float64).T
                ax.scatter(x + rng.uniform(-0.15, 0.15, len(x)), y, marker=marker, label=f"called {call}")
        ax.set_xticks(range(len(KINDS)), KINDS)
        ax.set(ylim=(-0.02, 1.02), xlabel="true kind", ylabel="slide score")
        ax.set_title(f"Slide scores, AUC {_num(result['auc']['value'])} (micro+macro vs negative)")
        ax.legend(loc="best", fontsize=8)
        return _save(fig, Path(path))
    finally:
        plt.close(fig)
