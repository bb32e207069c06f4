"""compare_detections: hand-built detections with known matches and score differences."""

import torch

from detres.perf.agreement import compare_detections


def _dets(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels)}


def test_matches_by_label_and_iou():
    ours = [_dets([[0, 0, 100, 100], [200, 200, 300, 300], [0, 0, 50, 50]], [0.9, 0.8, 0.3], [1, 2, 1])]
    # Same first box shifted by 0.1 px (IoU 0.998), second box with another label, third missing.
    theirs = [_dets([[0.1, 0, 100.1, 100], [200, 200, 300, 300]], [0.8995, 0.7], [1, 3])]
    result = compare_detections(ours, theirs)
    assert result["matched_frac"] == 1 / 3
    assert abs(result["max_score_diff"] - 0.0005) < 1e-6
    assert 0.99 < result["min_iou"] < 1.0
    assert result["num_ours"] == 3 and result["num_theirs"] == 2


def test_identical_detections_agree_fully():
    dets = [_dets([[1, 2, 30, 40], [5, 5, 60, 60]], [0.7, 0.6], [1, 1]), _dets([], [], [])]
    dets[1]["boxes"] = dets[1]["boxes"].reshape(0, 4)
    result = compare_detections(dets, dets)
    assert result == {"max_score_diff": 0.0, "min_iou": 1.0, "matched_frac": 1.0, "num_ours": 2.0,
                      "num_theirs": 2.0}
