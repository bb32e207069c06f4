"""Where an OpenVINO model's time goes: its CPU plugin's own per-layer counters (PERF_COUNT), summed by layer type
and by the precision a layer ran in (the plugin's exec_type, e.g. jit_avx512_I8 or ..._BF16), for the precision
table's "where the time goes". (The exported layers' names do not say which module they came from, so the sums are
by type.)"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np


def openvino_profile(path: str | os.PathLike, image: np.ndarray, *, config: dict | None = None,
                     runs: int = 3) -> dict:
    """{"total_ms", "by_type": {type: ms}, "by_precision": {exec precision: ms}} of one inference of `image`
    ([1, 3, H, W] float32), the median of `runs` profiled runs after one warm-up; config: the compile settings
    (precision hint, threads). Times are the plugin's real time per executed layer."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    if model.input(0).get_partial_shape().rank.get_length() == 3:  # a graph of one [3, H, W] image (the peer's)
        image = image[0]
    if model.is_dynamic():
        model.reshape({0: list(image.shape)})  # a static model, as the folder path runs from a size's 2nd image
    compiled = core.compile_model(model, "CPU", {**(config or {}), "PERF_COUNT": True})
    request = compiled.create_infer_request()
    request.infer({0: image})
    samples = []
    for _ in range(runs):
        request.infer({0: image})
        by_type: dict[str, float] = defaultdict(float)
        by_precision: dict[str, float] = defaultdict(float)
        for info in request.profiling_info:
            if info.status != info.Status.EXECUTED:
                continue
            ms = info.real_time.total_seconds() * 1e3
            by_type[info.node_type] += ms
            by_precision[info.exec_type.rsplit("_", 1)[-1]] += ms
        samples.append((sum(by_type.values()), by_type, by_precision))
    total, by_type, by_precision = sorted(samples, key=lambda s: s[0])[len(samples) // 2]
    return {"total_ms": round(total, 2),
            "by_type": {k: round(v, 2) for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])},
            "by_precision": {k: round(v, 2) for k, v in sorted(by_precision.items(), key=lambda kv: -kv[1])}}


def format_profile(name: str, profile: dict, top: int = 10) -> str:
    """Markdown: the `top` layer types, then the time by the precision layers ran in, in ms and as a share."""
    total = max(profile["total_ms"], 1e-9)
    lines = [f"{name}: {profile['total_ms']:.1f} ms per image (OpenVINO's layer counters)", "",
             "| layer type / ran in | ms | share |", "| --- | ---: | ---: |"]
    rows = [*list(profile["by_type"].items())[:top], *[(f"ran in {k}", v) for k, v in profile["by_precision"].items()]]
    for kind, ms in rows:
        lines.append(f"| {kind} | {ms:.1f} | {100 * ms / total:.0f}% |")
    return "\n".join(lines)
