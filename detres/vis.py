"""Drawing detections on images (OpenCV), for infer.py and TensorBoard."""

from __future__ import annotations

import cv2
import numpy as np

_PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                     [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]], np.uint8)


def draw_detections(rgb: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    class_names: list[str]) -> np.ndarray:
    """A copy of the uint8 RGB image with each box, its class name and score drawn in the class's colour."""
    out = np.ascontiguousarray(rgb.copy())
    thickness = max(1, round(min(out.shape[:2]) / 300))
    for box, score, label in zip(boxes, scores, labels):
        colour = tuple(int(c) for c in _PALETTE[(int(label) - 1) % len(_PALETTE)])
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        name = class_names[int(label) - 1] if 0 < int(label) <= len(class_names) else str(int(label))
        text = f"{name} {float(score):.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        cv2.rectangle(out, (x1, max(0, y1 - th - 4)), (x1 + tw + 2, max(th + 4, y1)), colour, -1)
        cv2.putText(out, text, (x1 + 1, max(th + 1, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return out
