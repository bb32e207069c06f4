"""Classification training end to end: a tiny ResNet learns the synthetic set far above chance, a classification
checkpoint (ours or torchvision's) is a detection backbone as it is, the CIFAR-10 reader, the PCA colour noise,
the CIFAR and plateau learning-rate schedules, and the run folder (checkpoints, TensorBoard scalars)."""

import importlib.util
import json
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from detres.config import InputConfig, SolverConfig, load_config
from detres.data import cls_transforms as T
from detres.data.classification import build_cls_dataset
from detres.engine.cls_trainer import train_classifier
from detres.engine.solver import build_lr_scheduler, build_optimizer, lr_factor_at
from detres.errors import CheckpointError, ConfigError, DataError, UserError
from detres.io.checkpoint import load_checkpoint
from detres.modeling.faster_rcnn import build_faster_rcnn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "datasets"))
import make_cls_shapes  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CHANCE_TOP1_ERR = 100.0 * (1 - 1 / len(make_cls_shapes.CLASSES))  # 6 classes: 83.3%


def _tool(name: str):
    """Import tools/<name>.py as a module, to call its main() in this process."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cls_cfg(data: Path, run: Path, *extra: str):
    """configs/cls_demo.yaml on a generated set in tmp_path, at a tiny size."""
    return load_config(REPO / "configs" / "cls_demo.yaml", [
        f"data.train.root={data}", f"data.test.root={data}", f"output.dir={run}", "output.tensorboard=false",
        "model.backbone.width=8", *extra])


# small and fast: for runs that only need to exist, not to learn
SHORT_OVERRIDES = ["model.backbone.width=8", "data.input.crop_size=32", "data.input.resize_range=[32,40]",
                   "data.input.test_resize=36", "solver.ims_per_batch=8"]


# ----------------------------------------------------------------------------------------------------------------
# a tiny ResNet-18 learns the synthetic shapes; measured by tools/test_cls.py


# 48 px images, 40 px crops, width 8, 300 images per class: 672 SGD iterations. Measured top-1 error on the 120
# validation images (centre crop): 30.8% and 30.8% for seeds 0 and 1 (10-crop 27.5%, 30.8%), chance is 83.3%.
# A run whose net does not learn stays at 75-83%; the bar of 55% leaves a margin of 24 points to the measured runs.
LEARN_OVERRIDES = ["model.backbone.depth=18", "data.input.crop_size=40", "data.input.resize_range=[40,52]",
                   "data.input.test_resize=44", "solver.ims_per_batch=32", "solver.base_lr=0.02",
                   "solver.schedule=step", "solver.max_epochs=12", "solver.steps=[560]"]
TOP1_ERR_BAR = 55.0


def test_tiny_resnet_learns_the_synthetic_set_far_above_chance(tmp_path, monkeypatch, capsys):
    data = make_cls_shapes.generate(tmp_path / "shapes_cls", seed=0, train_per_class=300, val_per_class=20, size=48)
    cfg = _cls_cfg(data, tmp_path / "run", *LEARN_OVERRIDES)
    final = train_classifier(cfg)
    assert final["cls/top1_err"] < TOP1_ERR_BAR < CHANCE_TOP1_ERR
    # the same numbers again through the test tool: its own dataset, checkpoint loading and centre-crop testing
    tool = _tool("test_cls")
    for mode in ("center", "tencrop"):
        out = tmp_path / f"{mode}.json"
        monkeypatch.setattr(sys, "argv", ["test_cls.py", "--cfg", str(REPO / "configs" / "cls_demo.yaml"), "--ckpt",
                                          str(tmp_path / "run" / "model_final.pth"), "--mode", mode, "--out", str(out),
                                          f"data.test.root={data}", "model.backbone.width=8", *LEARN_OVERRIDES])
        assert tool.main() == 0
        metrics = json.loads(out.read_text())
        assert metrics["cls/top1_err"] < TOP1_ERR_BAR
        assert metrics["cls/top5_err"] <= metrics["cls/top1_err"]
        if mode == "center":
            assert metrics == pytest.approx(final)
    assert "top1_err" in capsys.readouterr().out


def test_train_tool_generates_the_demo_set_on_first_use(tmp_path, monkeypatch):
    root = tmp_path / "shapes_cls"
    monkeypatch.setattr(sys, "argv", ["train_cls.py", "--cfg", str(REPO / "configs" / "cls_demo.yaml"),
                                      f"data.train.root={root}", f"data.test.root={root}",
                                      f"output.dir={tmp_path / 'run'}", "output.tensorboard=false", *SHORT_OVERRIDES,
                                      "solver.max_epochs=1"])
    assert _tool("train_cls").main() == 0
    wnids = [f"n{i:08d}" for i in range(len(make_cls_shapes.CLASSES))]
    assert sorted(p.name for p in (root / "train").iterdir()) == wnids
    assert sorted(p.name for p in (root / "val").iterdir()) == wnids
    assert (tmp_path / "run" / "model_final.pth").is_file()


# ----------------------------------------------------------------------------------------------------------------
# a classification checkpoint is a detection backbone as it is


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """Two epochs of the cls trainer on a small set (root/shapes_cls), TensorBoard on: a real checkpoint and a
    real run folder (root/run)."""
    root = tmp_path_factory.mktemp("cls_short")
    data = make_cls_shapes.generate(root / "shapes_cls", seed=1, train_per_class=8, val_per_class=2, size=40)
    cfg = _cls_cfg(data, root / "run", *SHORT_OVERRIDES, "solver.max_epochs=2", "output.tensorboard=true",
                   "output.log_period=1")
    train_classifier(cfg)
    return root / "run"


def _detector_backbone_state(model) -> dict[str, torch.Tensor]:
    """The detector's ResNet tensors under the classification names: trunk.X -> X, roi_head.res5.X -> layer4.X."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("trunk."):
            out[key.removeprefix("trunk.")] = value
        elif key.startswith("roi_head.res5."):
            out["layer4." + key.removeprefix("roi_head.res5.")] = value
    return out


def _assert_backbone_equals(model, weights: dict[str, torch.Tensor]) -> None:
    """Every trunk/res5 tensor of the detector equals the file's, and every file tensor but fc is used."""
    expected = {k: v for k, v in weights.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    got = {k: v for k, v in _detector_backbone_state(model).items() if not k.endswith("num_batches_tracked")}
    assert set(got) == set(expected)  # strict: no key of the backbone left at its initial value, none unused
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_cls_checkpoint_loads_as_the_detector_backbone(short_run):
    state = load_checkpoint(short_run / "model_final.pth")
    assert state["model"]["fc.weight"].shape[0] == len(make_cls_shapes.CLASSES)
    cfg = load_config(REPO / "configs" / "demo.yaml", [
        "model.backbone.width=8", f"model.backbone.weights={short_run / 'model_final.pth'}"])
    model = build_faster_rcnn(cfg)
    _assert_backbone_equals(model, state["model"])
    with torch.no_grad():
        detections = model.eval()([torch.randn(3, 64, 80)])
    assert set(detections[0]) == {"boxes", "scores", "labels"}


def test_cls_checkpoint_of_another_width_is_refused_by_name(short_run):
    cfg = load_config(REPO / "configs" / "demo.yaml", [f"model.backbone.weights={short_run / 'model_final.pth'}"])
    with pytest.raises(CheckpointError, match="shape mismatches"):
        build_faster_rcnn(cfg)  # demo.yaml's width is 16, the checkpoint's 8


def test_recompute_bn_tool_writes_new_statistics_that_load_as_the_detector_backbone(short_run, tmp_path,
                                                                                     monkeypatch):
    out = tmp_path / "bn.pth"
    monkeypatch.setattr(sys, "argv", ["recompute_bn.py", "--cfg", str(REPO / "configs" / "cls_demo.yaml"), "--ckpt",
                                      str(short_run / "model_final.pth"), "--out", str(out), "--batches", "3",
                                      *SHORT_OVERRIDES, f"data.train.root={short_run.parent / 'shapes_cls'}"])
    assert _tool("recompute_bn").main() == 0
    before, after = load_checkpoint(short_run / "model_final.pth")["model"], load_checkpoint(out)["model"]
    assert set(before) == set(after)
    assert not torch.allclose(before["layer3.0.bn1.running_var"], after["layer3.0.bn1.running_var"])
    assert torch.equal(before["layer3.0.conv1.weight"], after["layer3.0.conv1.weight"])  # weights untouched
    cfg = load_config(REPO / "configs" / "demo.yaml", ["model.backbone.width=8", f"model.backbone.weights={out}"])
    _assert_backbone_equals(build_faster_rcnn(cfg), after)


def test_torchvision_resnet18_state_dict_loads_as_the_detector_backbone(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    with torch.no_grad():  # non-default BN statistics, so that equality proves they were copied
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    cfg = load_config(REPO / "configs" / "demo.yaml", [
        "model.backbone.width=64", f"model.backbone.weights={tmp_path / 'resnet18.pth'}"])
    _assert_backbone_equals(build_faster_rcnn(cfg), reference.state_dict())


def test_run_folder_has_atomic_checkpoints_and_tensorboard_scalars(short_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert (short_run / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert {p.name for p in short_run.glob("*.pth")} == {"model_epoch0001.pth", "model_final.pth"}
    assert not list(short_run.glob(".*.tmp"))  # no temporary file left behind
    state = load_checkpoint(short_run / "model_final.pth")
    assert {"model", "optimizer", "scheduler", "epoch", "iteration", "config", "class_names"} <= set(state)
    assert state["iteration"] == 2 * (6 * 8 // 8) and state["class_names"] == sorted(state["class_names"])
    events = EventAccumulator(str(short_run / "tb")).Reload()
    assert {"train/loss", "train/lr", "val/top1_err", "val/top5_err"} <= set(events.Tags()["scalars"])
    assert len(events.Scalars("val/top1_err")) == 2  # one per epoch


# ----------------------------------------------------------------------------------------------------------------
# CIFAR-10 python batches


class _Python2Pickler(pickle._Pickler):
    """Protocol 2 with bytes written as Python 2 `str` (BINSTRING), as in the real CIFAR-10 files, which Python 2
    pickled; Python 3 writes bytes at protocol 2 through `_codecs.encode` instead."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def _dump(obj: dict, path: Path, protocol: int | str) -> None:
    with path.open("wb") as handle:
        if protocol == "python2":
            _Python2Pickler(handle, protocol=2).dump(obj)
        else:
            pickle.dump(obj, handle, protocol=protocol)


def _write_cifar(folder: Path, protocol: int | str) -> dict[str, tuple[np.ndarray, list[int]]]:
    """A tiny cifar-10-batches-py: 5 training batches of 3 images and a test batch of 4, as the real files hold
    them (dicts with b'data' uint8 [N, 3072] = R, G, B planes of 32x32 row-major, b'labels' a list of ints)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    written = {}
    for name, count in [*[(f"data_batch_{i}", 3) for i in range(1, 6)], ("test_batch", 4)]:
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, count)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img_{i}.png".encode() for i in range(count)]}
        _dump(batch, folder / name, protocol)
        written[name] = (data, labels)
    meta = {b"label_names": [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                    "horse", "ship", "truck")], b"num_vis": 3072}
    _dump(meta, folder / "batches.meta", protocol)
    return written


@pytest.mark.parametrize("protocol", ["python2", 2, 4, 5])  # the real files, and copies pickled by Python 3
def test_cifar10_reader_on_a_generated_batches_folder(tmp_path, protocol):
    written = _write_cifar(tmp_path / "cifar-10-batches-py", protocol)
    cfg = load_config(REPO / "configs" / "cifar10_r110.yaml", [f"data.train.root={tmp_path / 'cifar-10-batches-py'}",
                                                                f"data.test.root={tmp_path / 'cifar-10-batches-py'}"])
    kw = dict(input_cfg=cfg.data.input, pixel_mean=MEAN, pixel_std=STD)
    train = build_cls_dataset(cfg.data.train, train=True, **kw)
    test = build_cls_dataset(cfg.data.test, train=False, **kw)
    assert len(train) == 15 and len(test) == 4
    assert train.class_names[0] == "airplane" and train.class_names[9] == "truck"
    data, labels = written["data_batch_2"]  # image 1 of the second batch is dataset index 3 + 1
    hwc = np.stack([data[1, :1024], data[1, 1024:2048], data[1, 2048:]], axis=-1).reshape(32, 32, 3)
    assert np.array_equal(train.load_rgb(4), hwc) and train.label_of(4) == labels[1]
    image, label = test[2]
    expected = (written["test_batch"][0][2].reshape(3, 32, 32) / 255.0 - np.array(MEAN)[:, None, None]) / \
        np.array(STD)[:, None, None]
    assert label == written["test_batch"][1][2]
    assert torch.allclose(image, torch.from_numpy(expected).float(), atol=1e-5)


def test_cifar10_missing_or_foreign_file_is_a_clear_error(tmp_path):
    _write_cifar(tmp_path / "c", "python2")
    (tmp_path / "c" / "data_batch_3").unlink()
    ds = load_config(REPO / "configs" / "cifar10_r110.yaml", [f"data.train.root={tmp_path / 'c'}"]).data
    with pytest.raises(DataError, match="CIFAR-10 file not found: .*data_batch_3"):
        build_cls_dataset(ds.train, input_cfg=ds.input, pixel_mean=MEAN, pixel_std=STD, train=True)
    (tmp_path / "c" / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8),
                                                               b"labels": [0]}, protocol=4))
    (tmp_path / "c" / "data_batch_4").write_bytes(pickle.dumps(Path("x"), protocol=4))  # a pickle of another class
    with pytest.raises(DataError, match="data_batch_4 is not a CIFAR-10 batch file"):
        build_cls_dataset(ds.train, input_cfg=ds.input, pixel_mean=MEAN, pixel_std=STD, train=True)


def test_cifar_train_transform_pads_4_crops_32_and_flips():
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    transform = T.cifar_train_transform(InputConfig(cifar_pad=4), MEAN, STD)
    padded = (np.pad(image, ((4, 4), (4, 4), (0, 0))) / 255.0 - MEAN) / STD  # zero pixels, then normalized

    def window(dy: int, dx: int, flip: bool) -> np.ndarray:
        crop = padded[dy:dy + 32, dx:dx + 32]
        return crop[:, ::-1] if flip else crop

    seen = set()
    for seed in range(40):
        transform.set_random_seed(seed)
        out = transform(image=image)["image"]
        assert out.shape == (32, 32, 3)
        matches = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
                   if np.allclose(out, window(dy, dx, flip), atol=1e-5)]
        assert matches, f"seed {seed}: not a 32x32 window of the 4-px zero-padded image, flipped or not"
        seen.update(matches)
    assert {flip for _, _, flip in seen} == {False, True}
    assert len({(dy, dx) for dy, dx, _ in seen}) > 10  # offsets spread over the 9x9 possible ones


# ----------------------------------------------------------------------------------------------------------------
# PCA colour noise


def test_pca_colour_noise_moves_every_pixel_by_one_offset_along_the_given_eigenvector():
    eigvec = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))[0]  # columns: orthonormal directions
    image = np.random.default_rng(3).normal(size=(8, 10, 3)).astype(np.float32)
    std = np.array([0.2, 0.25, 0.3])
    noise = T.PCAColourNoise(alpha_std=0.5, eigval=(2.0, 0.0, 0.0), eigvec=tuple(map(tuple, eigvec)),
                             pixel_std=list(std), p=1.0)
    alphas = []
    for seed in range(200):
        noise.set_random_seed(seed)
        offset = (noise(image=image)["image"] - image).reshape(-1, 3)
        assert np.allclose(offset, offset[0], atol=1e-5)  # one colour offset for the whole image
        rgb = offset[0] * std  # back to [0, 1] pixels
        assert np.allclose(rgb, (rgb @ eigvec[:, 0]) * eigvec[:, 0], atol=1e-5)  # along the first eigenvector
        alphas.append(rgb @ eigvec[:, 0] / 2.0)
    assert np.std(alphas) == pytest.approx(0.5, rel=0.15) and abs(np.mean(alphas)) < 0.15


def test_imagenet_train_transform_adds_the_pca_offset_of_the_imagenet_components():
    image = np.random.default_rng(4).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    with_pca = T.imagenet_train_transform(InputConfig(crop_size=48, resize_range=[56, 64], pca_jitter=0.1), MEAN, STD)
    without = T.imagenet_train_transform(InputConfig(crop_size=48, resize_range=[56, 64], pca_jitter=0.0), MEAN, STD)
    eigvec, eigval = np.array(T.IMAGENET_PCA_EIGVEC), np.array(T.IMAGENET_PCA_EIGVAL)
    shifts = []
    for seed in range(50):
        with_pca.set_random_seed(seed)
        without.set_random_seed(seed)
        offset = (with_pca(image=image)["image"] - without(image=image)["image"]).reshape(-1, 3)
        assert np.allclose(offset, offset[0], atol=1e-4)  # same crop and flip, plus one colour offset
        alpha = np.linalg.solve(eigvec, offset[0] * STD) / eigval  # the offset's coordinates on the components
        assert np.all(np.abs(alpha) < 0.6)  # N(0, 0.1) draws
        shifts.append(np.abs(offset[0] * STD * 255).max())
    assert np.median(shifts) > 1.0  # a few uint8 levels of colour change, not rounding noise


# ----------------------------------------------------------------------------------------------------------------
# learning-rate schedules


def _lrs(cfg: SolverConfig, iterations: list[int]) -> dict[int, float]:
    """The optimizer's lr at each iteration under the scheduler the trainer builds (stepped once per iteration)."""
    optimizer = build_optimizer(torch.nn.Linear(2, 2), cfg)
    scheduler = build_lr_scheduler(optimizer, cfg)
    out = {}
    for it in range(max(iterations) + 1):
        if it in iterations:
            out[it] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    return out


def test_cifar_schedule_warms_up_at_0_01_then_0_1_and_divides_by_10_at_the_steps():
    solver = load_config(REPO / "configs" / "cifar10_r110.yaml").solver  # Sec. 4.2, ResNet-110
    assert (solver.schedule, solver.momentum, solver.weight_decay) == ("cifar", 0.9, 1e-4)
    lrs = _lrs(solver, [0, 1, 399, 400, 401, 31999, 32000, 47999, 48000, 63999])
    expected = {0: 0.01, 1: 0.01, 399: 0.01, 400: 0.1, 401: 0.1, 31999: 0.1, 32000: 0.01, 47999: 0.01,
                48000: 0.001, 63999: 0.001}
    assert lrs == pytest.approx(expected)
    assert lr_factor_at(solver, 100) * solver.base_lr == pytest.approx(0.01)


def test_step_schedule_warms_up_linearly():
    cfg = SolverConfig(base_lr=0.02, schedule="step", steps=[30], warmup_iters=10, warmup_factor=0.1)
    lrs = _lrs(cfg, [0, 5, 10, 29, 30])
    assert lrs == pytest.approx({0: 0.002, 5: 0.011, 10: 0.02, 29: 0.02, 30: 0.002})


def test_plateau_schedule_divides_by_10_after_patience_epochs_without_improvement():
    solver = load_config(REPO / "configs" / "imagenet_r50.yaml").solver  # Sec. 3.4
    assert (solver.schedule, solver.base_lr, solver.momentum, solver.weight_decay) == ("plateau", 0.1, 0.9, 1e-4)
    optimizer = build_optimizer(torch.nn.Linear(2, 2), solver)
    scheduler = build_lr_scheduler(optimizer, solver)
    errors = [60.0, 50.0, 40.0, 40.0, 41.0, 40.5, 40.0, 30.0, 30.0, 30.0, 30.0, 30.0]
    lrs = []
    for err in errors:  # the trainer steps it once per epoch with the validation top-1 error
        scheduler.step(err)
        lrs.append(optimizer.param_groups[0]["lr"])
    patience = solver.plateau_patience  # 3: the 4th epoch in a row without a new best divides by 10
    assert lrs[2 + patience] == pytest.approx(0.1)
    assert lrs[2 + patience + 1] == pytest.approx(0.01)
    assert lrs[7 + patience + 1] == pytest.approx(0.001)  # new best at epoch 7, then 4 bad epochs


def test_unknown_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match="solver.schedule='cosine'"):
        build_lr_scheduler(build_optimizer(torch.nn.Linear(2, 2), SolverConfig()), SolverConfig(schedule="cosine"))


# ----------------------------------------------------------------------------------------------------------------
# user errors of the classification pipeline


def test_classification_user_errors_name_the_thing_and_the_fix(tmp_path):
    data = make_cls_shapes.generate(tmp_path / "s", seed=0, train_per_class=1, val_per_class=1, size=32)
    with pytest.raises(UserError, match=r"6 images, fewer than solver.ims_per_batch=32"):
        train_classifier(_cls_cfg(data, tmp_path / "run"))
    cfg = _cls_cfg(data, tmp_path / "run2", "data.train.format=coco")
    with pytest.raises(ConfigError, match="data.train.format='coco' is not a classification format"):
        build_cls_dataset(cfg.data.train, input_cfg=cfg.data.input, pixel_mean=MEAN, pixel_std=STD, train=True)
    (tmp_path / "empty" / "train" / "n0").mkdir(parents=True)
    cfg = _cls_cfg(tmp_path / "empty", tmp_path / "run3")
    with pytest.raises(DataError, match="has class folders but no images"):
        build_cls_dataset(cfg.data.train, input_cfg=cfg.data.input, pixel_mean=MEAN, pixel_std=STD, train=True)


def test_an_iteration_budget_ends_inside_the_last_epoch(tmp_path):
    # 48 training images at batch 8: 6 iterations per epoch; max_iter 9 stops 3 iterations into epoch 2
    data = make_cls_shapes.generate(tmp_path / "shapes_cls", seed=2, train_per_class=8, val_per_class=2, size=40)
    cfg = _cls_cfg(data, tmp_path / "run", *SHORT_OVERRIDES, "solver.max_epochs=0", "solver.max_iter=9")
    train_classifier(cfg)
    state = load_checkpoint(tmp_path / "run" / "model_final.pth")
    assert state["iteration"] == 9 and state["epoch"] == 1
