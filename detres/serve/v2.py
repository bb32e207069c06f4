"""The Open Inference Protocol (KServe v2, Triton's HTTP API), so that tritonclient and KServe talk to detres:
health, model metadata and infer, whose BYTES input holds encoded images (JSON `data` as base64 strings, or the
binary tensor extension that tritonclient uses: `Inference-Header-Content-Length` JSON bytes, then each element
as a 4-byte little-endian length and its bytes). Outputs, over all images of the request: `boxes` FP32 [K, 4]
(x1, y1, x2, y2 in original pixels), `scores` FP32 [K], `labels` BYTES [K] (class names), `image_index` INT32 [K]
(which input image each detection belongs to); JSON, or binary where asked."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import struct
from importlib import metadata

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from detres.serve.decoding import parse_score_thr
from detres.serve.http_errors import HTTPError
from detres.serve.state import ServeState, detect_one

HEADER_LENGTH = "inference-header-content-length"
INPUT_NAME = "image"
OUTPUTS = {"boxes": "FP32", "scores": "FP32", "labels": "BYTES", "image_index": "INT32"}
router = APIRouter(prefix="/v2")


def _state(request: Request) -> ServeState:
    return request.app.state.serve


def _check_model(request: Request, name: str) -> ServeState:
    state = _state(request)
    if name != state.cfg.serve.model_name:
        raise HTTPError(404, f"no model {name!r}; this server serves {state.cfg.serve.model_name!r} "
                        "(serve.model_name)")
    return state


@router.get("/health/live")
async def live() -> dict:
    return {"live": True}


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    is_ready = _state(request).ready
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("")
async def server_metadata() -> dict:
    return {"name": "detres", "version": metadata.version("detres"), "extensions": ["binary_tensor_data"]}


@router.get("/models/{name}")
async def model_metadata(request: Request, name: str) -> dict:
    state = _check_model(request, name)
    return {"name": name, "versions": ["1"], "platform": f"detres_{state.backend}",
            "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "boxes", "datatype": "FP32", "shape": [-1, 4]},
                        *({"name": key, "datatype": kind, "shape": [-1]} for key, kind in OUTPUTS.items()
                          if key != "boxes")],
            "parameters": {"classes": state.class_map.names}}


@router.get("/models/{name}/ready")
async def model_ready(request: Request, name: str) -> JSONResponse:
    is_ready = _check_model(request, name).ready
    return JSONResponse({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)


@router.post("/models/{name}/infer")
async def infer(request: Request, name: str) -> Response:
    state = _check_model(request, name)
    body = await request.body()
    parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
    score_thr = parse_score_thr(parsed["parameters"].get("score_thr"), state.cfg.serve.score_thr)
    results = await asyncio.gather(*(detect_one(state, image, score_thr, name=f"input {INPUT_NAME}[{i}]")
                                     for i, image in enumerate(parsed["images"])))
    request.state.batch_size = max(batch for _, batch, _ in results)
    content, headers = infer_response(name, parsed, [dets for dets, _, _ in results])
    return Response(content, headers=headers,
                    media_type="application/octet-stream" if headers else "application/json")


def parse_infer_request(body: bytes, header_length: str | None) -> dict:
    """{"images": [bytes], "parameters", "id", "outputs": {name: binary?}} of an infer request; 400 naming what
    is wrong with it."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise HTTPError(400, f"Inference-Header-Content-Length {header_length!r} is not a length within the "
                            f"{len(body)}-byte body")
        head, binary = body[: int(header_length)], body[int(header_length):]
    else:
        head, binary = body, b""
    try:
        request = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPError(400, f"the infer request is not JSON ({exc})") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or len(request["inputs"]) != 1:
        raise HTTPError(400, f"the infer request needs \"inputs\": one BYTES input named {INPUT_NAME!r} holding "
                        "encoded images")
    tensor = request["inputs"][0]
    if not isinstance(tensor, dict) or tensor.get("datatype") != "BYTES":
        raise HTTPError(400, f"input {tensor.get('name') if isinstance(tensor, dict) else tensor!r}: datatype must "
                        "be BYTES (the encoded image files)")
    if tensor.get("name") != INPUT_NAME:
        raise HTTPError(400, f"input {tensor.get('name')!r}: this model's input is named {INPUT_NAME!r}")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(v, int) and v >= 0 for v in shape):
        raise HTTPError(400, f"input {INPUT_NAME!r}: shape {shape!r} is not a list of sizes")
    count = int(np.prod(shape)) if shape else 1
    params = tensor.get("parameters") or {}
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if not isinstance(size, int) or size < 0 or size > len(binary):
            raise HTTPError(400, f"input {INPUT_NAME!r}: binary_data_size {size!r} is larger than the "
                            f"{len(binary)} binary bytes sent")
        images = _split_bytes(binary[:size])
    else:
        images = _base64_items(tensor.get("data"))
    if len(images) != count or count == 0:
        raise HTTPError(400, f"input {INPUT_NAME!r}: shape {shape} says {count} image(s), the data hold "
                        f"{len(images)}")
    parameters = request.get("parameters") or {}
    default_binary = bool(parameters.get("binary_data_output", False))
    outputs = {}
    for out in request.get("outputs") or [{"name": key} for key in OUTPUTS]:
        if not isinstance(out, dict) or out.get("name") not in OUTPUTS:
            raise HTTPError(400, f"output {out!r}: this model's outputs are {', '.join(OUTPUTS)}")
        outputs[out["name"]] = bool((out.get("parameters") or {}).get("binary_data", default_binary))
    return {"images": images, "parameters": parameters, "id": request.get("id"), "outputs": outputs}


def _split_bytes(raw: bytes) -> list[bytes]:
    """The binary BYTES encoding: each element a 4-byte little-endian length and that many bytes."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise HTTPError(400, f"input {INPUT_NAME!r}: binary data cut inside an element's length")
        (length,) = struct.unpack_from("<I", raw, offset)
        if offset + 4 + length > len(raw):
            raise HTTPError(400, f"input {INPUT_NAME!r}: an element claims {length} bytes past the data's end")
        items.append(raw[offset + 4: offset + 4 + length])
        offset += 4 + length
    return items


def _base64_items(data) -> list[bytes]:
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise HTTPError(400, f"input {INPUT_NAME!r}: JSON data must be a list of base64 strings (or send it as "
                        "binary data)")
    try:
        return [base64.b64decode(item, validate=True) for item in data]
    except (binascii.Error, ValueError):
        raise HTTPError(400, f"input {INPUT_NAME!r}: an element of data is not valid base64") from None


def _arrays(per_image: list[list[dict]]) -> dict[str, np.ndarray]:
    dets = [(i, det) for i, image in enumerate(per_image) for det in image]
    return {"boxes": np.array([det["box"] for _, det in dets], np.float32).reshape(-1, 4),
            "scores": np.array([det["score"] for _, det in dets], np.float32),
            "labels": np.array([det["label"] for _, det in dets], object),
            "image_index": np.array([i for i, _ in dets], np.int32)}


def infer_response(model_name: str, parsed: dict, per_image: list[list[dict]]) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of the infer reply; the outputs asked for binary follow the JSON, whose length is then in
    the Inference-Header-Content-Length header."""
    arrays = _arrays(per_image)
    outputs, binary = [], []
    for name, as_binary in parsed["outputs"].items():
        array = arrays[name]
        entry = {"name": name, "datatype": OUTPUTS[name], "shape": list(array.shape)}
        if as_binary:
            raw = (b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in array) if name == "labels"
                   else np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            entry["data"] = array.reshape(-1).tolist()
        outputs.append(entry)
    reply = {"model_name": model_name, "model_version": "1", "outputs": outputs}
    if parsed["id"] is not None:
        reply["id"] = parsed["id"]
    head = json.dumps(reply).encode()
    if not binary:
        return head, {}
    return head + b"".join(binary), {"Inference-Header-Content-Length": str(len(head))}
