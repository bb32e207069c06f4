"""Throughput and latency of `detres serve` under concurrent clients, and the offline ceiling of `detres infer`
over the same images (tools/bench_serve.py; the table of docs/serving.md).

Each setup starts a real server process (tools/serve.py) and an httpx client in this process sends the images
from `concurrency` coroutines at once, each sending its next request when its reply arrives (a closed loop: the
load that `concurrency` users who wait for their answers would put on it). Latency is per request, from send to
reply; images/s is the requests answered 200 over the wall time of the level.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from detres.errors import UserError

REPO = Path(__file__).resolve().parents[2]
# setup -> options of `detres serve` (on top of --ckpt, or of --model for the exported runtimes)
SETUPS = {
    "batch1": ["--max-batch", "1"],
    "batched": [],  # images of one padded size share a forward (detres infer's detections)
    "padded": ["--pad-batch"],  # every image of a batch in one padded forward (serve.pad_batch=true)
    "onnxruntime": ["--max-batch", "1", "test.backend=onnxruntime"],
    "openvino": ["--max-batch", "1", "test.backend=openvino"],
}
EXPORTED = ("onnxruntime", "openvino")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`detres serve ARGS` (tools/serve.py) in a subprocess on a free port, its output in `log`."""

    def __init__(self, args: list[str], log: Path, *, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "serve.py"), "--port", str(self.port),
                                      *args], env=env, stdout=self._log_file, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Until GET /v2/health/ready answers 200 (the model loaded and warmed up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise UserError(f"the server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise UserError(f"the server was not ready in {timeout} s; its log: {self.log}")

    def stop(self) -> int:
        """SIGTERM (the graceful stop), SIGKILL after 60 s; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


def latency_summary(seconds: list[float]) -> dict[str, float]:
    """p50/p95/p99 in milliseconds (numpy's linear interpolation between order statistics)."""
    if not seconds:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    p50, p95, p99 = np.percentile(np.asarray(seconds) * 1000.0, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99)}


async def _closed_loop(url: str, payloads: list[bytes], *, concurrency: int, requests: int,
                       params: dict) -> dict[str, float]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_index = 0

    async def user(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < requests:
            body = payloads[next_index % len(payloads)]
            next_index += 1
            tic = time.perf_counter()
            reply = await client.post(url, content=body, params=params, headers={"Content-Type": "image/jpeg"})
            statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
            if reply.status_code == 200:
                latencies.append(time.perf_counter() - tic)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=600) as client:
        tic = time.perf_counter()
        await asyncio.gather(*(user(client) for _ in range(concurrency)))
        wall = time.perf_counter() - tic
    return {"concurrency": concurrency, "requests": requests, "ok": statuses.get(200, 0),
            "shed": statuses.get(503, 0), "errors": requests - statuses.get(200, 0) - statuses.get(503, 0),
            "images_per_second": statuses.get(200, 0) / wall, "seconds": wall, **latency_summary(latencies)}


def run_load(url: str, payloads: list[bytes], *, concurrency: int, requests: int,
             score_thr: float) -> dict[str, float]:
    """One level: `requests` POST /v1/detect from `concurrency` clients at once, after `concurrency` untimed
    warm-up requests."""
    detect = f"{url}/v1/detect"
    params = {"score_thr": score_thr}
    asyncio.run(_closed_loop(detect, payloads, concurrency=concurrency, requests=concurrency, params=params))
    return asyncio.run(_closed_loop(detect, payloads, concurrency=concurrency, requests=requests, params=params))


def offline_ceiling(model_args: list[str], images: Path, out: Path, *, score_thr: float, overrides: list[str],
                    env: dict[str, str]) -> dict[str, float]:
    """`detres infer --no-draw` over `images` (its own images/s, model loading excluded)."""
    done = subprocess.run([sys.executable, str(REPO / "tools" / "infer.py"), *model_args, "--input", str(images),
                           "--output", str(out), "--no-draw", "--score-thr", str(score_thr), *overrides],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"detres infer failed:\n{done.stderr[-3000:]}")
    report = json.loads((out / "detections.json").read_text())
    return {"images_per_second": report["images_per_second"], "images": len(report["detections"])}


def export_for_runtimes(ckpt: str, out: Path, *, env: dict[str, str]) -> Path:
    """tools/export.py --format onnx of the checkpoint (what the onnxruntime and openvino setups serve)."""
    done = subprocess.run([sys.executable, str(REPO / "tools" / "export.py"), "--ckpt", ckpt, "--format", "onnx",
                           "--out", str(out)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"detres export failed:\n{done.stderr[-3000:]}")
    return out


def format_serve_table(rows: list[dict], offline: dict[str, float] | None) -> str:
    """A markdown table: setup, concurrency, images/s (and its share of the offline ceiling), latencies."""
    lines = ["| setup | clients | images/s | vs `detres infer` | p50 ms | p95 ms | p99 ms | p99/p50 | 503s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    ceiling = offline["images_per_second"] if offline else None
    for row in rows:
        share = f"{100 * row['images_per_second'] / ceiling:.0f}%" if ceiling else "-"
        lines.append(f"| {row['setup']} | {row['concurrency']} | {row['images_per_second']:.1f} | {share} | "
                     f"{row['p50_ms']:.0f} | {row['p95_ms']:.0f} | {row['p99_ms']:.0f} | "
                     f"{row['p99_ms'] / row['p50_ms']:.1f} | {row['shed']} |")
    if offline:
        lines.append(f"| `detres infer` (offline) | - | {ceiling:.1f} | 100% | - | - | - | - | - |")
    return "\n".join(lines)


def bench_env(threads: int) -> dict[str, str]:
    """The environment of the server and infer processes: `threads` intra-op threads (0: the libraries' own)."""
    env = dict(os.environ)
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def calibrated_demo_checkpoint(path: str | os.PathLike, *, cfg_path: str | os.PathLike | None = None,
                               seed: int = 0) -> Path:
    """A checkpoint of the demo's detector (configs/demo.yaml) with random weights calibrated to realistic
    activations and scores (detres.perf.bench.calibrate_benchmark_model, as BENCHMARKS.md's models): a stand-in
    for timing where no trained demo model is at hand; its speed is the trained model's, its detections are not."""
    import torch

    from detres.config import config_to_dict, load_config
    from detres.data.records import ClassMap
    from detres.io.checkpoint import save_checkpoint
    from detres.modeling.faster_rcnn import build_faster_rcnn
    from detres.perf.bench import calibrate_benchmark_model
    from detres.perf.synthetic import synthetic_batch

    torch.manual_seed(seed)
    cfg = load_config(cfg_path or REPO / "configs" / "demo.yaml")
    model = build_faster_rcnn(cfg)
    backbone = cfg.model.backbone
    images, _ = synthetic_batch(2, height=cfg.data.input.test_scale, width=cfg.data.input.test_scale * 4 // 3,
                                num_classes=cfg.model.num_classes, pixel_mean=backbone.pixel_mean,
                                pixel_std=backbone.pixel_std, seed=seed)
    calibrate_benchmark_model(model, images)
    names = [f"class{i}" for i in range(1, cfg.model.num_classes + 1)]
    save_checkpoint({"model": model.state_dict(), "config": config_to_dict(cfg),
                     "class_map": ClassMap(names=names, dataset_ids=list(range(1, len(names) + 1))).to_dict()},
                    Path(path))
    return Path(path)
