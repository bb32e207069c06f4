"""`detres serve`: the detector behind HTTP (docs/serving.md).

One small module per job: `app` (FastAPI routes of /v1 and /metrics, error replies), `v2` (the Open Inference
Protocol), `state` (what the routes share, and an image's path to its detections), `batcher` (the bounded queue
and the model thread), `detection` (one batch through the detector, as `detres infer` runs it), `decoding`
(request bytes to the model's input, with the pixel limit), `limits` (body size), `auth` (bearer tokens),
`metrics` (Prometheus), `access_log` (one line per request), `http_errors` (the JSON error shape),
`config_check` (the serve.* keys) and `server` (uvicorn with the graceful shutdown and the queue's drain).
"""
