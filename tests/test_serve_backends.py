"""`detres serve --model DIR test.backend=onnxruntime`: the exported detector behind the server gives the
detections that `detres infer` gives with the same export and backend."""

import subprocess
import sys

import httpx
import pytest
from serve_helpers import ENV, REPO, Server, assert_same_detections, demo_images, infer_reference, tiny_checkpoint


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_onnx")
    done = subprocess.run([sys.executable, str(REPO / "tools" / "export.py"), "--ckpt", str(tiny_checkpoint(root)),
                           "--format", "onnx", "--out", str(root / "export")], env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, root / "export", demo_images(root, 20)


def test_onnxruntime_server_equals_infer_on_20_demo_images(exported):
    root, model, images = exported
    backend = ["--model", str(model), "test.backend=onnxruntime"]
    reference = infer_reference(None, images, root / "infer", *backend)
    server = Server([*backend, "--score-thr", "0"], root / "server.log")
    try:
        server.wait_ready()
        names = sorted(reference)
        assert len(names) == 20
        with httpx.Client() as client:
            replies = [client.post(f"{server.url}/v1/detect", content=(images / name).read_bytes(), timeout=60)
                       for name in names]
            platform = client.get(f"{server.url}/v2/models/detres").json()["platform"]
    finally:
        server.stop()
    assert platform == "detres_onnxruntime"
    assert all(reply.status_code == 200 for reply in replies)
    assert_same_detections([reply.json()["detections"] for reply in replies], [reference[name] for name in names])
