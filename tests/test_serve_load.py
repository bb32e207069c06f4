"""`detres serve` under a burst it cannot queue: a server with serve.max_queue=2 answers the excess 503 with
Retry-After, answers every request it accepted correctly, and keeps serving."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serve_helpers import Server, demo_images, tiny_checkpoint

BURST = 48


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_load")
    images = sorted(demo_images(root, 4).glob("*.jpg"))
    # one image at a time, at a larger scale: each forward takes long enough for the burst to pile up
    server = Server(["--ckpt", str(tiny_checkpoint(root)), "--max-queue", "2", "--max-batch", "1", "--max-wait-ms",
                     "0", "--score-thr", "0", "data.input.test_scale=320", "data.input.max_size=512"],
                    root / "server.log")
    try:
        server.wait_ready()
        yield server, images
    finally:
        server.stop()


def test_a_burst_past_max_queue_gets_503_with_retry_after_and_the_rest_is_answered(served):
    server, images = served
    url = f"{server.url}/v1/detect"
    with httpx.Client(limits=httpx.Limits(max_connections=BURST)) as client:
        expected = [client.post(url, content=path.read_bytes()).json() for path in images]  # one at a time
        with ThreadPoolExecutor(BURST) as pool:
            replies = list(pool.map(lambda i: (i, client.post(url, content=images[i % 4].read_bytes(), timeout=120)),
                                    range(BURST)))
        shed = [reply for _, reply in replies if reply.status_code == 503]
        served_ok = [(i, reply) for i, reply in replies if reply.status_code == 200]
        assert len(shed) + len(served_ok) == BURST
        assert shed and served_ok, "a burst of 48 on a queue of 2 sheds some requests and serves others"
        for reply in shed:
            assert reply.headers["Retry-After"] == "1" and "serve.max_queue" in reply.json()["error"]
        for i, reply in served_ok:
            assert reply.json() == expected[i % 4]
        assert client.get(f"{server.url}/v2/health/ready").status_code == 200  # still up, still serving
        assert client.post(url, content=images[0].read_bytes()).json() == expected[0]
        metrics = client.get(f"{server.url}/metrics").text
    assert f'detres_requests_total{{route="/v1/detect",status="503"}} {len(shed)}.0' in metrics
    assert "detres_queue_depth 0.0" in metrics  # every admitted request left the queue
