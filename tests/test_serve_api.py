"""`detres serve` as a client sees it: one real server process (tools/serve.py, a tiny demo-config detector,
bearer tokens on) and real HTTP clients (httpx, tritonclient).

Its detections equal `detres infer`'s for the same images, through /v1/detect and through the KServe v2 route;
32 concurrent clients all get them while their requests are batched; every bad input gets its 4xx JSON error and
the server keeps serving; tokens are enforced except on the health routes."""

import re
import shutil
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from serve_helpers import TOKEN, Server, assert_same_detections, demo_images, infer_reference, tiny_checkpoint

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(server, {relative image path: infer's detections}, images folder): 20 demo images of mixed sizes, and
    under same/ 8 of one size, which the server batches together."""
    root = tmp_path_factory.mktemp("serve")
    ckpt = tiny_checkpoint(root)
    images = demo_images(root / "mixed", 20)
    same = demo_images(root / "same", 8, seed=5, size=(60, 60))
    shutil.copytree(same, images / "same")
    (root / "tokens.txt").write_text(f"# one token a line\n{TOKEN}\n")
    reference = infer_reference(ckpt, images, root / "infer")
    server = Server(["--ckpt", str(ckpt), "--token-file", str(root / "tokens.txt"), "--max-batch", "8",
                     "--max-wait-ms", "200", "--max-body-mb", "1", "--score-thr", "0"], root / "server.log")
    try:
        server.wait_ready()
        yield server, reference, images
    finally:
        server.stop()


def _detect(client: httpx.Client, url: str, path: Path, **params) -> httpx.Response:
    return client.post(f"{url}/v1/detect", content=path.read_bytes(), params=params,
                       headers={**AUTH, "Content-Type": "image/jpeg"}, timeout=60)


def _mixed(images: Path) -> list[str]:
    return sorted(p.name for p in images.glob("*.jpg"))


def test_detections_equal_infer_for_20_demo_images(served):
    server, reference, images = served
    names = _mixed(images)
    assert len(names) == 20
    with httpx.Client() as client:
        replies = [_detect(client, server.url, images / name) for name in names]
        form = client.post(f"{server.url}/v1/detect", files={"image": (names[0], (images / names[0]).read_bytes(),
                                                                       "image/jpeg")}, headers=AUTH, timeout=60)
        strict = _detect(client, server.url, images / names[0], score_thr=0.175)
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies if r.status_code != 200]
    assert_same_detections([r.json()["detections"] for r in replies], [reference[name] for name in names])
    for name, reply in zip(names, replies):
        height, width = cv2.imread(str(images / name)).shape[:2]
        assert (reply.json()["width"], reply.json()["height"]) == (width, height)
    assert form.status_code == 200 and form.json() == replies[0].json()  # the multipart field `image` too
    # ?score_thr= keeps what infer --score-thr keeps: the detections at or above it
    assert strict.json()["detections"] == [d for d in replies[0].json()["detections"] if d["score"] >= 0.175]


def test_tritonclient_infers_through_v2_with_the_same_detections(served):
    server, reference, images = served
    names = _mixed(images)[:3]
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_model_metadata("detres", headers=dict(AUTH))  # tritonclient adds to the dict it gets
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    image = triton.InferInput("image", [len(names)], "BYTES")
    image.set_data_from_numpy(np.array([(images / n).read_bytes() for n in names], dtype=object))
    result = client.infer("detres", [image], headers=dict(AUTH), parameters={"score_thr": 0.0})
    boxes, scores = result.as_numpy("boxes"), result.as_numpy("scores")
    labels, index = result.as_numpy("labels"), result.as_numpy("image_index")
    ours = [[{"box": box.tolist(), "score": float(score), "label": label.decode()}
             for box, score, label, i in zip(boxes, scores, labels, index) if i == k] for k in range(len(names))]
    assert_same_detections(ours, [reference[n] for n in names])


def test_32_concurrent_clients_get_correct_answers_in_batches(served):
    server, reference, images = served
    same = sorted((images / "same").glob("*.jpg"))
    jobs = [same[i % len(same)] for i in range(32)]
    with httpx.Client(limits=httpx.Limits(max_connections=32)) as client, ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(lambda path: _detect(client, server.url, path), jobs))
        metrics = client.get(f"{server.url}/metrics", headers=AUTH).text
    assert [r.status_code for r in replies] == [200] * 32
    assert_same_detections([r.json()["detections"] for r in replies], [reference[f"same/{p.name}"] for p in jobs])
    histogram = {le: float(v) for le, v in re.findall(r'detres_batch_size_bucket\{le="([^"]+)"\} (\S+)', metrics)}
    assert histogram["+Inf"] > histogram["1.0"], histogram  # some forwards held more than one image
    assert re.search(r"POST /v1/detect 200 [\d.]+ ms batch ([2-8])\b", server.log.read_text())


def _png_header_claiming(width: int, height: int) -> bytes:
    """A valid 100-byte PNG whose header declares width x height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def test_every_bad_input_gets_its_status_and_a_json_error(served):
    server, _, images = served
    good = (images / _mixed(images)[0]).read_bytes()
    detect = f"{server.url}/v1/detect"
    cases = {
        "empty body": ("POST", detect, b"", 400, "empty"),
        "not an image": ("POST", detect, b"plain text, not an image\n" * 10, 400, "not a readable image"),
        "truncated JPEG": ("POST", detect, good[: len(good) // 2], 400, "truncated JPEG"),
        "over max_body_mb": ("POST", detect, b"\0" * (2**20 + 10), 413, "serve.max_body_mb"),
        "decompression bomb": ("POST", detect, _png_header_claiming(30000, 30000), 413, "decompression-bomb"),
        "bad score_thr": ("POST", f"{detect}?score_thr=high", good, 400, "score_thr"),
        "unknown route": ("GET", f"{server.url}/v1/nothing", None, 404, "no route"),
        "wrong method": ("GET", detect, None, 405, "POST"),
        "v2 not JSON": ("POST", f"{server.url}/v2/models/detres/infer", b"{oops", 400, "not JSON"),
        "v2 unknown model": ("POST", f"{server.url}/v2/models/yolo/infer", b"{}", 404, "no model"),
    }
    with httpx.Client() as client:
        for name, (method, url, body, status, words) in cases.items():
            reply = client.request(method, url, content=body, headers=AUTH, timeout=60)
            assert reply.status_code == status, (name, reply.text)
            assert words in reply.json()["error"], (name, reply.json())
        no_field = client.post(detect, files={"file": ("x.jpg", good)}, headers=AUTH)
        assert no_field.status_code == 400 and "field 'image'" in no_field.json()["error"]
        chunked = client.post(detect, content=iter([b"\0" * 2**19] * 3), headers=AUTH)  # no Content-Length
        assert chunked.status_code == 413 and "max_body_mb" in chunked.json()["error"]
        assert client.post(detect, content=good, headers=AUTH).status_code == 200  # still serving
    assert "Traceback" not in server.log.read_text()


def test_tokens_are_required_except_on_health(served):
    server, _, images = served
    good = (images / _mixed(images)[0]).read_bytes()
    detect = f"{server.url}/v1/detect"
    with httpx.Client() as client:
        none = client.post(detect, content=good)
        wrong = client.post(detect, content=good, headers={"Authorization": f"Bearer {TOKEN}x"})
        right = client.post(detect, content=good, headers=AUTH)
        metrics = client.get(f"{server.url}/metrics")
        health = [client.get(f"{server.url}/v2/health/{probe}") for probe in ("live", "ready")]
    assert [none.status_code, wrong.status_code, right.status_code] == [401, 401, 200]
    assert none.headers["WWW-Authenticate"] == "Bearer" and "missing" in none.json()["error"]
    assert "wrong" in wrong.json()["error"]
    assert metrics.status_code == 401
    assert [h.status_code for h in health] == [200, 200]
