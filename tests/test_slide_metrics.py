"""Slide-level metrics against hand-computed values on a tiny hand-built set of five slides.

Grid 10 x 10 cells of 100 um, so the Camelyon16 tolerance of 75 um is 0.75 cells. Tissue is rows
0-7 on every slide (80 cells).

- A, macro (score 0.9, called macro, reported 3.0 mm, true 2.5 mm): lesion = rows 2-4 x cols 2-4.
  Detections: (3.5, 3.5) 0.9 inside -> TP; (3.5, 5.6) 0.8, 0.6 cells right of the lesion -> a repeat
  hit, ignored; (8.5, 8.5) 0.7 -> FP. Analysed: all tissue but (2, 2) and (0, 0..3), plus glass
  cells (9, 0) and (9, 1).
- B, micro (0.5, called micro, true 1.0 mm, detection sizes -> reported 0.9 mm): lesion (6, 6),
  (6, 7). Detections: (1.5, 1.5) 0.95 FP; (6.5, 8.9) 0.4 is 0.9 cells away -> FP; (6.5, 6.5) 0.3 TP.
- C, ITC (0.7, called ITC): ITC cell (5, 5). (5.5, 5.5) 0.99 on the ITC -> neither; (0.5, 0.5) 0.2 FP.
- D, negative (0.6, called micro): detections 0.6 and 0.85, both FP.
- E, negative (0.1, called none): no detections.

AUC micro+macro vs negative: pairs (0.9 > 0.6, 0.9 > 0.1, 0.5 < 0.6, 0.5 > 0.1) -> 3/4.
FP confidences 0.95, 0.85, 0.7, 0.6, 0.4, 0.2 over 5 slides; TP confidences 0.9 (A), 0.3 (B).
Operating points (fp/slide, sensitivity): t=0.95 (0.2, 0), 0.9 (0.2, 0.5), 0.85 (0.4, 0.5),
0.7 (0.6, 0.5), 0.6 (0.8, 0.5), 0.4 (1.0, 0.5), 0.3 (1.0, 1.0), 0.2 (1.2, 1.0).
Sensitivity at 1/4, 1/2, 1, 2, 4, 8 FP/slide: 0.5, 0.5, 1, 1, 1, 1 -> FROC score 5/6.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wsi_pipeline.errors import OptionError
from wsi_pipeline.evaluation.froc import froc_curve, match_slide, point_to_cells_distance
from wsi_pipeline.evaluation.slide_metrics import (
    Detection,
    SlideCall,
    SlideCase,
    TrueLesion,
    TrueSlide,
    analysed_cells,
    call_kind,
    evaluate_slides,
    exact_interval,
)
from wsi_pipeline.evaluation.slide_report import format_markdown, plot_froc, plot_scores

TISSUE = np.zeros((10, 10), dtype=bool)
TISSUE[:8] = True
BLOCK = np.array([(r, c) for r in range(2, 5) for c in range(2, 5)])


def _truth(kind: str, lesions=()) -> TrueSlide:
    return TrueSlide(kind, tuple(lesions), TISSUE, cell_um=100.0)


def _cases() -> list[SlideCase]:
    analysed_a = TISSUE.copy()
    analysed_a[2, 2] = False
    analysed_a[0, 0:4] = False
    analysed_a[9, 0:2] = True
    d = Detection
    return [
        SlideCase(
            "A",
            _truth("macro", [TrueLesion("macro", BLOCK, 2.5)]),
            SlideCall(
                0.9,
                "macrometastasis",
                (d(3.5, 3.5, 0.9), d(3.5, 5.6, 0.8), d(8.5, 8.5, 0.7)),
                3.0,
                analysed_a,
            ),
        ),
        SlideCase(
            "B",
            _truth("micro", [TrueLesion("micro", np.array([(6, 6), (6, 7)]), 1.0)]),
            SlideCall(
                0.5,
                "micrometastasis",
                (d(1.5, 1.5, 0.95), d(6.5, 8.9, 0.4, 0.8), d(6.5, 6.5, 0.3, 0.9)),
                analysed=TISSUE,
            ),
        ),
        SlideCase(
            "C",
            _truth("itc", [TrueLesion("itc", np.array([(5, 5)]), 0.14)]),
            SlideCall(0.7, "isolated tumour cells", (d(5.5, 5.5, 0.99), d(0.5, 0.5, 0.2)), analysed=TISSUE),
        ),
        SlideCase(
            "D",
            _truth("negative"),
            SlideCall(0.6, "micro", (d(4.5, 4.5, 0.6), d(2.5, 2.5, 0.85)), analysed=TISSUE),
        ),
        SlideCase("E", _truth("negative"), SlideCall(0.1, "none", analysed=TISSUE)),
    ]


@pytest.fixture(scope="module")
def result() -> dict:
    return evaluate_slides(_cases(), n_boot=200, seed=0)


def test_slide_auc_and_itc_auc(result: dict) -> None:
    assert result["auc"]["value"] == pytest.approx(0.75)
    assert (result["auc"]["n_pos"], result["auc"]["n_neg"]) == (2, 2)
    lo, hi = result["auc"]["ci95"]
    assert 0.0 <= lo <= 0.75 <= hi <= 1.0
    assert result["auc_itc"]["value"] == pytest.approx(1.0) and result["auc_itc"]["n_pos"] == 1


def test_auc_counts_ties_as_half() -> None:
    cases = [
        SlideCase("p", _truth("micro", [TrueLesion("micro", BLOCK, 0.5)]), SlideCall(0.6, "micro")),
        SlideCase("n", _truth("negative"), SlideCall(0.6, "none")),
    ]
    assert evaluate_slides(cases, n_boot=0)["auc"]["value"] == pytest.approx(0.5)


def test_confusion_matrix_and_negative_calls(result: dict) -> None:
    assert result["confusion"]["rows"] == ["negative", "itc", "micro", "macro"]
    assert result["confusion"]["cols"] == ["none", "itc", "micro", "macro"]
    assert result["confusion"]["matrix"] == [[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    neg = result["negative_slides"]
    assert neg["called_micro_or_macro"]["k"] == 1 and neg["called_micro_or_macro"]["n"] == 2
    assert neg["called_micro_or_macro"]["ci95"] == pytest.approx([0.0125791, 0.9874209], abs=1e-6)
    assert neg["fp_regions_per_slide"] == pytest.approx(1.0)  # D: 2, E: 0


def test_froc_with_itc_exclusion(result: dict) -> None:
    froc = result["froc"]
    assert froc["n_lesions"] == 2  # the ITC lesion is not counted
    assert froc["sensitivity"] == pytest.approx([0.5, 0.5, 1.0, 1.0, 1.0, 1.0])
    assert froc["score"] == pytest.approx(5 / 6)
    assert froc["fp_per_slide_all"] == pytest.approx(6 / 5)
    assert froc["curve"]["fp_per_slide"] == pytest.approx([0, 0.2, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.2])
    assert froc["curve"]["sensitivity"] == pytest.approx([0, 0, 0.5, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0])
    assert [s["n_fp"] for s in result["slides"]] == [1, 2, 1, 2, 0]
    lo, hi = froc["ci95"]
    assert 0.0 <= lo <= hi <= 1.0


def test_matching_rule_tolerance_itc_and_repeats() -> None:
    cases = _cases()
    a = match_slide(cases[0].truth.lesions, cases[0].call.detections, tolerance=0.75)
    assert a.lesion_confidence.tolist() == [0.9] and a.fp_confidence.tolist() == [0.7] and a.n_ignored == 1
    c = match_slide(cases[2].truth.lesions, cases[2].call.detections, tolerance=0.75)
    assert c.lesion_kinds == () and c.fp_confidence.tolist() == [0.2] and c.n_ignored == 1
    # without tolerance the repeat hit 0.6 cells outside lesion A becomes a false positive
    strict = match_slide(cases[0].truth.lesions, cases[0].call.detections, tolerance=0.0)
    assert sorted(strict.fp_confidence.tolist()) == [0.7, 0.8]
    assert point_to_cells_distance(3.5, 5.6, BLOCK) == pytest.approx(0.6)
    assert point_to_cells_distance(0.0, 0.0, BLOCK) == pytest.approx(np.sqrt(8))
    assert point_to_cells_distance(3.0, 3.0, BLOCK) == 0.0
    # a missed lesion keeps the sensitivity at 1/2; its FP at 0.9 ties with A's TP, so at 1/4 FP per
    # slide (two slides) not even A's lesion is reached
    missed = match_slide(cases[1].truth.lesions, (Detection(0.5, 9.5, 0.9),), tolerance=0.75)
    curve = froc_curve([a, missed])
    assert curve.n_lesions == 2 and curve.sensitivity_at().tolist() == [0.0] + [0.5] * 5


def test_lesion_detection_rates(result: dict) -> None:
    det = result["lesion_detection"]
    assert (det["micro"]["k"], det["micro"]["n"], det["macro"]["k"], det["macro"]["n"]) == (1, 1, 1, 1)
    assert det["macro_slides_called_macro"]["rate"] == 1.0 and det["micro_slides_called_micro"]["rate"] == 1.0
    assert det["micro"]["ci95"] == pytest.approx([0.025, 1.0])  # exact interval of 1/1


def test_largest_lesion_size_error(result: dict) -> None:
    rows = {r["slide"]: r for r in result["size_error"]["per_slide"]}
    assert set(rows) == {"A", "B"}
    assert rows["A"]["relative_error"] == pytest.approx(0.2)  # 3.0 vs 2.5
    assert rows["B"]["called_mm"] == pytest.approx(0.9)  # largest detection size, none reported
    assert rows["B"]["relative_error"] == pytest.approx(-0.1)
    assert result["size_error"]["mean_abs"] == pytest.approx(0.15)
    assert result["size_error"]["max_abs"] == pytest.approx(0.2)


def test_tissue_recall_from_masks(result: dict) -> None:
    recall = result["tissue_recall"]
    assert recall["method"] == "mask"
    assert recall["pooled"] == pytest.approx(395 / 400)
    assert recall["min"] == pytest.approx(75 / 80)
    assert recall["tumour_cells"] == {"placed": 12, "missed": 1}
    assert recall["glass_cells_analysed"] == 2


def test_tissue_recall_from_counts() -> None:
    cases = [SlideCase("x", _truth("negative"), SlideCall(0.1, "none", n_analysed=60))]
    cases.append(SlideCase("y", _truth("negative"), SlideCall(0.1, "none", n_analysed=90)))  # capped at 80
    recall = evaluate_slides(cases, n_boot=0)["tissue_recall"]
    assert recall["method"] == "count" and "tumour_cells" not in recall
    assert recall["pooled"] == pytest.approx(140 / 160) and recall["min"] == pytest.approx(0.75)


def test_helpers() -> None:
    det = Detection.from_level0(350, 150, cell_px=100, confidence=0.5)
    assert (det.row, det.col) == (1.5, 3.5)
    mask = analysed_cells((4, 5), 100, [(0, 0, 200, 100), (290, 300, 100, 100)])
    assert np.argwhere(mask).tolist() == [[0, 0], [0, 1], [3, 3]]
    assert call_kind("Macrometastasis") == "macro" and call_kind("none") == "none"
    with pytest.raises(OptionError, match="unknown slide category"):
        call_kind("suspicious")
    assert exact_interval(0, 8) == pytest.approx([0.0, 1 - 0.025 ** (1 / 8)])
    assert exact_interval(0, 0) is None


def test_true_slide_from_simulated_plan() -> None:
    from wsi_pipeline.simulate import plan_slides

    plan = plan_slides(np.array([0, 1] * 50), np.arange(100), ["itc"], seed=2)[0]
    truth = TrueSlide.from_truth(plan)
    assert truth.kind == "itc" and len(truth.lesions) == len(plan.lesions)
    assert np.array_equal(truth.tissue, plan.tissue) and truth.cell_um == pytest.approx(93.312)


def test_result_is_json_and_renders(result: dict, tmp_path: Path) -> None:
    json.dumps(result, allow_nan=False)
    text = format_markdown(result, per_slide=True)
    assert "| slide AUC, micro+macro vs negative | 0.750 |" in text
    assert "| negative slides called micro/macro | 1/2 (50 %) | 0.01-0.99 |" in text
    assert "| FROC score (lesions within 75 um) | 0.833 |" in text
    assert "| negative | 1 | 0 | 1 | 0 |" in text and "| A | macro | 0.900 | macro |" in text
    assert "| tumour cells not analysed | 1 of 12 |" in text
    for plot in (plot_froc(result, tmp_path / "froc.png"), plot_scores(result, tmp_path / "scores.png")):
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000


def test_rejects_bad_cases() -> None:
    with pytest.raises(OptionError, match="no slides"):
        evaluate_slides([])
    bad = SlideCase("z", _truth("negative"), SlideCall(0.1, "none", analysed=np.ones((3, 3), bool)))
    with pytest.raises(OptionError, match="analysed mask"):
        evaluate_slides([bad], n_boot=0)
