"""The benchmark's table for people: detres and peer side by side with their ratio."""

from __future__ import annotations

from detres.perf.backends import format_backend_table

ROWS = (
    ("inference img/s, batch 1", "infer_img_s", "{:.3f}"),
    ("inference img/s, batch {batch}", "infer_img_s_b{batch}", "{:.3f}"),
    ("training it/s", "train_it_s", "{:.3f}"),
    ("peak RSS inference (MiB)", "peak_rss_mb", "{:.0f}"),
    ("peak RSS training (MiB)", "train_peak_rss_mb", "{:.0f}"),
    ("peak GPU memory inference (MiB)", "peak_gpu_mb", "{:.0f}"),
    ("peak GPU memory training (MiB)", "train_peak_gpu_mb", "{:.0f}"),
    ("GFLOPs per image", "gflops_per_img", "{:.1f}"),
    ("fraction of matmul peak", "frac_of_peak", "{:.3f}"),
)


def format_table(results: dict[str, float], *, batch: int) -> str:
    """Markdown table of the side-by-side figures, then agreement, machine, ablation and sweep lines."""
    lines = ["| figure | detres | peer | detres / peer |", "| --- | ---: | ---: | ---: |"]
    for label, key, fmt in ROWS:
        key = key.format(batch=batch)
        ours, theirs = results.get(f"detres/{key}"), results.get(f"peer/{key}")
        if ours is None or theirs is None:
            continue
        ratio = f"{ours / theirs:.2f}x" if theirs else "-"
        lines.append(f"| {label.format(batch=batch)} | {fmt.format(ours)} | {fmt.format(theirs)} | {ratio} |")
    lines.append("")
    lines.append(f"agreement with the peer: max score diff {results.get('agree/max_score_diff', float('nan')):.2e}, "
                 f"min matched IoU {results.get('agree/min_iou', float('nan')):.4f}, matched fraction "
                 f"{results.get('agree/matched_frac', float('nan')):.3f}; optimized vs plain detres max score diff "
                 f"{results.get('agree/optimized_max_score_diff', float('nan')):.2e}")
    lines.append(f"machine: float32 matmul {results.get('machine/matmul_gflops', float('nan')):.1f} GFLOP/s measured "
                 f"(in detres's precision {results.get('detres/matmul_gflops', float('nan')):.1f}), "
                 f"{int(results.get('machine/threads', 0))} threads; image "
                 f"{int(results.get('size/height', 0))}x{int(results.get('size/width', 0))}, "
                 f"{int(results.get('size/proposals', 0))} proposals")
    ablation = {k.split("/")[1]: v for k, v in results.items()
                if k.startswith("ablation/") and k.endswith("/infer_img_s_b1")}
    if ablation:
        base = ablation.get("plain")
        lines.append("")
        lines.append("| detres inference variant (batch 1) | img/s | vs plain | vs peer |")
        lines.append("| --- | ---: | ---: | ---: |")
        peer = results.get("peer/infer_img_s")
        for name, value in sorted(ablation.items(), key=lambda item: item[1]):  # slowest first
            vs_plain = f"{value / base:.2f}x" if base else "-"
            vs_peer = f"{value / peer:.2f}x" if peer else "-"
            lines.append(f"| {name} | {value:.3f} | {vs_plain} | {vs_peer} |")
    sweep = sorted({k.split("/")[1] for k in results if k.startswith("sweep/")},
                   key=lambda s: (s.split("_")[0], int(s.split("_")[1])))
    if sweep:
        lines.append("")
        lines.append("| sweep (batch 1) | detres img/s | peer img/s | detres / peer |")
        lines.append("| --- | ---: | ---: | ---: |")
        for point in sweep:
            ours, theirs = results[f"sweep/{point}/detres_img_s"], results[f"sweep/{point}/peer_img_s"]
            lines.append(f"| {point.replace('_', ' = ')} | {ours:.3f} | {theirs:.3f} | {ours / theirs:.2f}x |")
    backends = format_backend_table(results)
    if backends:
        lines += ["", backends]
    return "\n".join(lines)
