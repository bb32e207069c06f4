"""The C4 detector learns: losses fall, training boxes are found, outputs are in input pixels, BN stays frozen."""

import torch
import torch.nn.functional as F
from torchvision.ops import FrozenBatchNorm2d, box_iou

from detres.config import load_config
from detres.modeling.faster_rcnn import build_faster_rcnn


def _scene():
    """Two images with coloured rectangles: the class is the colour channel (an easy, learnable task)."""
    images = [torch.zeros(3, 96, 128), torch.zeros(3, 112, 96)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 50.0, 70.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[30.0, 30.0, 80.0, 60.0], [5.0, 5.0, 30.0, 40.0]]),
                "labels": torch.tensor([2, 3])}]
    for image, target in zip(images, targets):
        for box, label in zip(target["boxes"].long(), target["labels"]):
            image[label - 1, box[1]:box[3], box[0]:box[2]] = 2.0
    return images, targets


def _model():
    cfg = load_config(None, [
        "model.num_classes=3", "model.backbone.depth=18", "model.backbone.width=8", "model.backbone.freeze_at=2",
        "model.rpn.anchor_sizes=[16,32,64]", "model.rpn.pre_nms_topk_train=600", "model.rpn.post_nms_topk_train=100",
        "model.rpn.pre_nms_topk_test=300", "model.rpn.post_nms_topk_test=50", "model.rpn.batch_size_per_image=64",
        "model.roi_head.batch_size_per_image=32"])
    images, _ = _scene()
    calib = [torch.stack([F.pad(images[0], (0, 0, 0, 16)), F.pad(images[1], (0, 32, 0, 0))])]
    return build_faster_rcnn(cfg, calibration_images=calib, calibration_batches=1)


def test_overfits_a_few_images_and_finds_the_training_boxes():
    torch.manual_seed(0)
    model = _model()
    images, targets = _scene()
    frozen_before = {k: v.clone() for k, v in model.state_dict().items()
                     if k.startswith(("trunk.conv1", "trunk.bn1", "trunk.layer1")) or "running" in k}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.02, momentum=0.9)
    history = []
    model.train()
    for _ in range(150):
        losses = model(images, targets)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    first, last = history[0], {k: sum(h[k] for h in history[-10:]) / 10 for k in history[0]}
    assert last["loss_rpn_cls"] < first["loss_rpn_cls"] / 10
    assert last["loss_cls"] < first["loss_cls"] / 5
    # frozen BN and the frozen stem/conv2_x did not move
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen_before.items())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())

    model.eval()
    with torch.no_grad():
        outputs = model(images)
    for image, target, out in zip(images, targets, outputs):
        for box, label in zip(target["boxes"], target["labels"]):
            same_class = out["labels"] == label
            assert same_class.any(), f"class {label} not detected"
            assert box_iou(box[None], out["boxes"][same_class]).max() > 0.5
        # eval outputs lie in the input image's pixels: inside the unpadded image
        h, w = image.shape[1:]
        assert (out["boxes"][:, 0::2] <= w).all() and (out["boxes"][:, 1::2] <= h).all()
        assert (out["boxes"] >= 0).all()


def test_eval_output_format_without_training():
    model = _model().eval()
    images, _ = _scene()
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 2
    for out in outputs:
        assert set(out) == {"boxes", "scores", "labels"}
        assert out["boxes"].dtype == torch.float32 and out["labels"].dtype == torch.int64
        assert len(out["boxes"]) <= 100
