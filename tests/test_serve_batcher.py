"""The batcher and the batch runner of `detres serve`, without a server: batches up to max_batch from what
arrives within max_wait_ms, admission bounded by max_queue, the queue drained on close, a failing batch failing
only its own requests; images grouped by padded input size unless serve.pad_batch."""

import asyncio

import numpy as np
import pytest
import torch
from serve_helpers import tiny_checkpoint

from detres import commands
from detres.config import load_config
from detres.data.records import ClassMap
from detres.errors import UserError
from detres.serve.batcher import Batcher, OverloadedError
from detres.serve.decoding import Job
from detres.serve.detection import BatchDetector


def _run(coroutine):
    return asyncio.run(coroutine)


def test_requests_arriving_together_are_run_together_up_to_max_batch():
    seen = []

    def run_batch(items):
        seen.append(list(items))
        return [item * 10 for item in items]

    batcher = Batcher(run_batch, max_batch=4, max_wait_ms=300, max_queue=16)
    batcher.start()

    async def ten():
        futures = []
        for i in range(10):
            batcher.reserve()
            futures.append(batcher.submit(i))
        return await asyncio.gather(*futures)

    assert _run(ten()) == [i * 10 for i in range(10)]  # each request gets its own result
    assert [len(batch) for batch in seen] == [4, 4, 2]
    assert [item for batch in seen for item in batch] == list(range(10))  # in arrival order
    batcher.close(5)


def test_admission_is_bounded_by_max_queue_and_released_places_return():
    batcher = Batcher(lambda items: items, max_batch=1, max_wait_ms=0, max_queue=2)
    batcher.reserve()
    batcher.reserve()
    with pytest.raises(OverloadedError):
        batcher.reserve()
    assert batcher.depth() == 2
    batcher.release()
    batcher.reserve()  # a released place (a request whose image was bad) can be taken again


def test_close_drains_the_queue_and_a_failing_batch_fails_only_its_requests():
    def run_batch(items):
        if "bad" in items:
            raise RuntimeError("model failed")
        return [f"ok {item}" for item in items]

    batcher = Batcher(run_batch, max_batch=1, max_wait_ms=0, max_queue=8)
    batcher.start()

    async def scenario():
        futures = []
        for item in ["a", "bad", "b", "c"]:
            batcher.reserve()
            futures.append(batcher.submit(item))
        await asyncio.get_running_loop().run_in_executor(None, batcher.close, 10)  # stop while requests wait
        return await asyncio.gather(*futures, return_exceptions=True)

    results = _run(scenario())
    assert results[0] == "ok a" and isinstance(results[1], RuntimeError) and results[2:] == ["ok b", "ok c"]
    with pytest.raises(OverloadedError):  # closed: no new requests
        batcher.reserve()


class _RecordingPredictor:
    """Stands for the detector: records the input sizes of each call, returns one fixed detection per image."""

    def __init__(self):
        self.calls = []

    def __call__(self, images):
        self.calls.append([tuple(image.shape[1:]) for image in images])
        return [{"boxes": torch.tensor([[1.0, 2.0, 5.0, 6.0]]), "scores": torch.tensor([0.9]),
                 "labels": torch.tensor([1])} for _ in images]


@pytest.mark.parametrize("pad_batch", [False, True])
def test_images_share_a_forward_only_when_their_padded_sizes_match(pad_batch):
    cfg = load_config(None, ["data.input.size_divisibility=16", f"serve.pad_batch={str(pad_batch).lower()}"])
    predictor = _RecordingPredictor()
    sizes = []
    runner = BatchDetector(predictor, ClassMap(names=["a"], dataset_ids=[1]), cfg, torch.device("cpu"),
                           on_forward=sizes.append)
    shapes = [(3, 40, 60), (3, 33, 63), (3, 48, 64), (3, 40, 60)]  # 40x60 and 33x63 both pad to 48x64; 48x64 too
    shapes.append((3, 50, 60))  # pads to 64x64: a group of its own
    jobs = [Job(tensor=torch.zeros(shape), orig_size=(shape[1] * 2, shape[2] * 2), score_thr=0.5) for shape in shapes]
    results = runner(jobs)
    if pad_batch:
        assert predictor.calls == [[s[1:] for s in shapes]] and sizes == [5]
    else:
        assert predictor.calls == [[s[1:] for s in shapes[:4]], [(50, 60)]] and sizes == [4, 1]
    assert [batch for _, batch in results] == ([5] * 5 if pad_batch else [4, 4, 4, 4, 1])
    # boxes back to the original pixels: the inputs are half the original size, so every coordinate doubles
    assert np.allclose(results[0][0][0]["box"], [2.0, 4.0, 10.0, 12.0]) and results[0][0][0]["label"] == "a"


@pytest.mark.parametrize(("args", "words"), [
    (["--max-batch", "0"], "serve.max_batch=0: must be at least 1"),
    (["serve.max_body_mb=0"], "serve.max_body_mb=0.0: must be above 0"),
    (["--token-file", "no/such/tokens.txt"], "--token-file no/such/tokens.txt: cannot be read"),
])
def test_a_serve_option_it_cannot_honour_stops_the_start_with_its_name(tmp_path, args, words):


    with pytest.raises(UserError, match=words.replace(".", r"\.")):
        commands.run("serve", ["--ckpt", str(tiny_checkpoint(tmp_path)), *args])
