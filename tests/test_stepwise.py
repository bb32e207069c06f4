"""Step-wise training (solver.mode=stepwise): fixed shared layers, step 2 on step 1's proposals, resume inside step 3,
stored proposals checked and refused when stale, one final detector."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_engine_det import REPO, tiny_overrides

from detres.config import load_config
from detres.data.detection import DetectionDataset
from detres.data.proposals import ProposalDataset
from detres.engine import stepwise
from detres.engine.inference import run_inference
from detres.engine.loading import load_detector
from detres.engine.proposal_store import StaleProposalsError, read_proposals
from detres.engine.train import train_detector
from detres.engine.trainer import Trainer, build_datasets, eval_loader
from detres.io.checkpoint import load_checkpoint, save_checkpoint
from detres.modeling.roi_heads import C4RoIHead

sys.path.insert(0, str(REPO / "datasets"))
import make_shapes  # noqa: E402

STEPS = ("solver.mode=stepwise",
         "solver.rpn_step={max_iter: 4, base_lr: 0.02, steps: [3], ims_per_batch: 2, warmup_iters: 1}",
         "solver.rcnn_step={max_iter: 4, base_lr: 0.02, steps: [3], ims_per_batch: 2, warmup_iters: 1}",
         "output.checkpoint_period=2")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes.generate(tmp_path_factory.mktemp("shapes"), seed=2, num_train=8, num_val=2,
                                min_size=64, max_size=96)


def stepwise_cfg(data, run, *extra):
    return load_config(REPO / "configs" / "demo.yaml", tiny_overrides(data, run, *STEPS, *extra))


@pytest.fixture(scope="module")
def finished(shapes, tmp_path_factory):
    """One uninterrupted step-wise run; its step 2 proposals as the RoI head received them, mapped back."""
    run = tmp_path_factory.mktemp("run")
    seen, metas = [], []
    original_losses, original_item = C4RoIHead.losses, ProposalDataset.__getitem__

    def losses(self, features, proposals, targets, sizes):
        seen.extend(p.clone() for p in proposals)
        return original_losses(self, features, proposals, targets, sizes)

    def item(self, index):
        out = original_item(self, index)
        metas.append((out[2], out[0].shape[-1]))
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(C4RoIHead, "losses", losses)
        patch.setattr(ProposalDataset, "__getitem__", item)
        metrics = train_detector(stepwise_cfg(shapes, run))
    step2 = len(seen) // 2  # steps 2 and 4 train the head on the same number of images
    return run, metrics, list(zip(seen[:step2], metas[:step2]))


def _model(path):
    return load_checkpoint(path)["model"]


def _part(weights, prefix):
    return {k: v for k, v in weights.items() if k.startswith(prefix)}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_shared_layers_are_bit_identical_before_and_after_steps_3_and_4(finished):
    run = finished[0]
    s1, s2, s3, s4 = (_model(run / s.name / "model_final.pth") for s in stepwise.STEPS)
    trunk2 = _part(s2, "trunk.")
    assert any(v.is_floating_point() for v in trunk2.values())
    assert _equal(trunk2, _part(s3, "trunk.")), "step 3 changed the shared layers (weights or BN statistics)"
    assert _equal(trunk2, _part(s4, "trunk.")), "step 4 changed the shared layers"
    # ... while each step trained what it owns
    assert not _equal(_part(s1, "trunk."), trunk2), "step 2 should train its own trunk from the initialization"
    assert not _equal(_part(s1, "rpn."), _part(s3, "rpn.")), "step 3 did not train the RPN"
    assert not _equal(_part(s2, "roi_head."), _part(s4, "roi_head.")), "step 4 did not train the head"
    assert _equal(_part(s2, "roi_head."), _part(s3, "roi_head.")), "step 3 must not touch the head"
    assert _equal(_part(s3, "rpn."), _part(s4, "rpn.")), "step 4 must not touch the RPN"
    final = _model(run / "model_final.pth")
    assert _equal(final, s4)


def test_step_2_trains_on_exactly_step_1s_proposals(finished, shapes):
    run, _, fed = finished
    cfg = stepwise_cfg(shapes, run)
    rpn, _, _ = load_detector(run / "step1_rpn" / "model_final.pth")
    train_set = build_datasets(cfg)[0]
    images = DetectionDataset(records=train_set.records, class_map=train_set.class_map, input_cfg=cfg.data.input,
                              pixel_mean=cfg.model.backbone.pixel_mean, pixel_std=cfg.model.backbone.pixel_std,
                              train=False)
    topk = (cfg.model.rpn.pre_nms_topk_train, cfg.model.rpn.post_nms_topk_train)
    expected = {}
    for i in range(len(images)):  # step 1's RPN, independently: eval mode, test scale, training counts
        image, _, meta = images[i]
        sy, sx = meta["scale"]
        expected[str(meta["image_id"])] = rpn.propose([image], topk)[0] / torch.tensor([sx, sy, sx, sy])
    assert len(fed) == 4 * 2 and all(len(p) > 0 for p, _ in fed)
    for boxes, (meta, width) in fed:
        if meta["flipped"]:
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        sy, sx = meta["scale"]
        back = boxes / torch.tensor([sx, sy, sx, sy])
        torch.testing.assert_close(back, expected[str(meta["image_id"])], rtol=0, atol=1e-4)


def test_resume_in_the_middle_of_step_3_equals_the_uninterrupted_run(finished, shapes, tmp_path, monkeypatch):
    run, metrics, _ = finished
    split = tmp_path / "split"
    original_step = Trainer.step

    def dying_step(self, images, targets):
        if self.cfg.output.dir.endswith("step3_rpn") and self.iteration == 3:
            raise KeyboardInterrupt  # killed after step 3's checkpoint at iteration 2
        return original_step(self, images, targets)

    monkeypatch.setattr(Trainer, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train_detector(stepwise_cfg(shapes, split))
    assert not (split / "step3_rpn" / "model_final.pth").exists()
    assert (split / "step3_rpn" / "model_0000002.pth").exists()
    monkeypatch.setattr(Trainer, "step", original_step)
    with pytest.raises(Exception, match="already holds checkpoints; pass --resume"):
        train_detector(stepwise_cfg(shapes, split))
    with pytest.raises(Exception, match="--resume: model.backbone.width=16 but the run .* was started with "
                                        "model.backbone.width=8"):
        train_detector(stepwise_cfg(shapes, split, "model.backbone.width=16"), resume=True)
    resumed = train_detector(stepwise_cfg(shapes, split), resume=True)
    assert _equal(_model(run / "model_final.pth"), _model(split / "model_final.pth"))
    np.testing.assert_equal(resumed, metrics)  # NaN (a class absent from the val images) equals NaN


def test_stale_modified_or_incomplete_proposals(finished, shapes, tmp_path):
    run = finished[0]
    work = tmp_path / "run"
    work.mkdir()
    for name in ("step1_rpn", "step1_proposals.pt", "step1_proposals.pt.sha256"):
        subprocess.run(["cp", "-r", str(run / name), str(work / name)], check=True)
    cfg = stepwise_cfg(shapes, work)
    step1, device = stepwise.STEPS[0], torch.device("cpu")
    path = stepwise.proposal_file(cfg, step1)
    good = stepwise._proposals_for(cfg, step1, device)
    # a kill between the file and its checksum: recomputed, the same proposals
    (work / "step1_proposals.pt.sha256").unlink()
    again = stepwise._proposals_for(cfg, step1, device)
    assert good.keys() == again.keys() and all(torch.equal(good[k], again[k]) for k in good)
    # another RPN than the one that made them (step 1 re-trained): refused
    ckpt = work / "step1_rpn" / "model_final.pth"
    state = load_checkpoint(ckpt)
    state["model"]["rpn.head.conv.bias"] = state["model"]["rpn.head.conv.bias"] + 1e-3
    save_checkpoint(state, ckpt)
    with pytest.raises(StaleProposalsError, match="stale: its checkpoint .*producing RPN's weights"):
        stepwise._proposals_for(cfg, step1, device)
    # another training set: refused
    stored = load_checkpoint(path)["identity"]
    with pytest.raises(StaleProposalsError, match="its dataset .*the training set changed"):
        read_proposals(path, {**stored, "dataset": "0" * 64})
    with pytest.raises(StaleProposalsError, match="settings"):
        read_proposals(path, {**stored, "settings": {**stored["settings"], "scale": 999}})
    # bytes changed after writing: refused
    with open(path, "r+b") as handle:
        handle.seek(-8, os.SEEK_END)
        handle.write(b"\0" * 8)
    with pytest.raises(StaleProposalsError, match="differs from the .* recorded"):
        read_proposals(path, stored)


def test_the_final_checkpoint_is_one_detector(finished, shapes):
    run = finished[0]
    cfg = stepwise_cfg(shapes, run)
    model, class_map, stored = load_detector(run / "model_final.pth", cfg)
    assert stored.solver.mode == "stepwise" and class_map.names == make_shapes.CLASSES
    step4 = load_detector(run / "step4_rcnn" / "model_final.pth", cfg)[0]
    dataset = build_datasets(cfg)[1]
    a = run_inference(model, eval_loader(cfg, dataset), device=torch.device("cpu"), progress=False)
    b = run_inference(step4, eval_loader(cfg, dataset), device=torch.device("cpu"), progress=False)
    for image_id in a:
        np.testing.assert_array_equal(a[image_id]["boxes"], b[image_id]["boxes"])
    assert (run / "metrics.json").is_file() and (run / "stepwise_time.json").is_file()


@pytest.mark.slow
def test_stepwise_under_torchrun(shapes, tmp_path):
    """Two gloo processes run all four steps; the proposals are computed sharded and gathered."""
    run = tmp_path / "ddp"
    overrides = tiny_overrides(shapes, run, *STEPS)
    script = ("import sys, torch; torch.set_num_threads(1); from detres.config import load_config; "
              "from detres.engine.train import train_detector; "
              f"train_detector(load_config({str(REPO / 'configs' / 'demo.yaml')!r}, sys.argv[1:]))")
    code = tmp_path / "run.py"
    code.write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(code),
                    *overrides], check=True, env=env, cwd=REPO, timeout=300, capture_output=True)
    cfg = stepwise_cfg(shapes, run)
    proposals = load_checkpoint(run / "step1_proposals.pt")
    assert len(proposals["image_ids"]) == len(build_datasets(cfg)[0])
    s2, s4 = _model(run / "step2_rcnn/model_final.pth"), _model(run / "step4_rcnn/model_final.pth")
    assert _equal(_part(s2, "trunk."), _part(s4, "trunk."))
    load_detector(run / "model_final.pth", cfg)


def test_ablation_table_has_the_new_rows_and_seed_statistics(finished, shapes, tmp_path, monkeypatch):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("ablate_det_tool", REPO / "tools" / "ablate_det.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    run = finished[0]
    ckpt = str(run / "model_final.pth")
    overrides = [o for o in tiny_overrides(shapes, tmp_path / "x") if o.startswith(("data.", "model."))]
    monkeypatch.setattr(sys, "argv", ["ablate_det.py", "--cfg", str(REPO / "configs" / "demo.yaml"), "--seeds", "2",
                                      "--ckpt", ckpt, "--ckpt-mstrain", ckpt, "--ckpt-stepwise", ckpt,
                                      "--out", str(tmp_path / "t9"), "test.pyramid_scales=[64,80,96]", *overrides])
    assert tool.main() == 0
    table = json.loads((tmp_path / "t9" / "table9.json").read_text())
    names = [r["row"] for r in table["rows"]]
    assert names == ["baseline", "+ box refinement", "+ multi-scale testing", "+ multi-scale RPN testing",
                     "+ multi-scale training", "ensemble of 2"]
    assert [r["row"] for r in table["stepwise_vs_joint"]] == ["joint training", "step-wise instead of joint"]
    for row in table["rows"]:  # the same model for both seeds: the spread is 0, the mean is each seed's value
        assert row["seeds"] == 2 and row["mAP@.5 std"] == 0.0
        assert row["mAP@.5 per seed"] == [row["mAP@.5"]] * 2
    assert "±" in (tmp_path / "t9" / "table9.md").read_text()
