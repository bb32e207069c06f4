"""SIGTERM while requests are in flight: they complete with their detections, and `detres serve` exits 0."""

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from serve_helpers import Server, demo_images, tiny_checkpoint


def test_sigterm_lets_requests_in_flight_finish_and_exits_0(tmp_path):
    images = sorted(demo_images(tmp_path, 6).glob("*.jpg"))
    # the model thread waits 1.5 s for a batch to fill, so the requests are surely in flight at the signal
    server = Server(["--ckpt", str(tiny_checkpoint(tmp_path)), "--max-batch", "16", "--max-wait-ms", "1500",
                     "--score-thr", "0"], tmp_path / "server.log")
    try:
        server.wait_ready()
        with httpx.Client() as client, ThreadPoolExecutor(len(images)) as pool:
            futures = [pool.submit(client.post, f"{server.url}/v1/detect", content=path.read_bytes(), timeout=60)
                       for path in images]
            time.sleep(0.5)
            assert not any(future.done() for future in futures)
            server.proc.send_signal(signal.SIGTERM)
            replies = [future.result() for future in futures]
        assert [reply.status_code for reply in replies] == [200] * len(images)
        assert all(reply.json()["detections"] for reply in replies)
        assert server.proc.wait(60) == 0
    finally:
        server.stop()
    log = server.log.read_text()
    assert "drained" in log and "Traceback" not in log
