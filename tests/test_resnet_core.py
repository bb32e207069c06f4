"""ResNet family: torchvision parity, shortcut options, C4 split, frozen BN, folding, BN recomputation."""

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detres.errors import CheckpointError
from detres.modeling import resnet as R
from detres.modeling.batchnorm import convert_to_frozen_bn, fold_frozen_bn, freeze_stages, recompute_bn_stats
from detres.modeling.weights import load_resnet_weights


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_state_dict_loads_strictly_and_logits_match(depth, tmp_path):
    ref = getattr(torchvision.models, f"resnet{depth}")(num_classes=7).eval()
    path = tmp_path / "tv.pth"
    torch.save(ref.state_dict(), path)
    ours = getattr(R, f"resnet{depth}")(num_classes=7).eval()
    load_resnet_weights(ours, path)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    assert (ours(x) - ref(x)).abs().max().item() < 1e-4


def test_weight_file_of_another_depth_is_a_clear_error(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_resnet_weights(R.resnet34(), tmp_path / "r18.pth")


def test_shortcut_options_parameter_counts():
    plain = R.resnet34(plain=True, width=16, num_classes=10)
    a = R.resnet34(shortcut="A", width=16, num_classes=10)
    b = R.resnet34(shortcut="B", width=16, num_classes=10)
    c = R.resnet34(shortcut="C", width=16, num_classes=10)
    assert _count(a) == _count(plain)
    # B: a 1x1 projection + BN only where the shape changes: conv2_1 keeps 16 ch; conv3_1, conv4_1, conv5_1 grow.
    expected_b = sum(cin * cout + 2 * cout for cin, cout in [(16, 32), (32, 64), (64, 128)])
    assert _count(b) - _count(plain) == expected_b
    # C: a projection on every one of the 3+4+6+3 shortcuts.
    widths = [16] * 3 + [32] * 4 + [64] * 6 + [128] * 3
    ins = [16, 16, 16, 16, 32, 32, 32, 32, 64, 64, 64, 64, 64, 64, 128, 128]
    expected_c = sum(i * o + 2 * o for i, o in zip(ins, widths))
    assert _count(c) - _count(plain) == expected_c


def test_option_a_zero_pads_and_subsamples():
    shortcut = R.ZeroPadShortcut(out_channels=6, stride=2)
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    y = shortcut(x)
    assert y.shape == (2, 6, 2, 2)
    assert torch.equal(y[:, :3], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 3:]) == 0


def test_plain_net_has_no_shortcut_and_differs_from_residual():
    plain = R.resnet18(plain=True, width=8)
    assert all(getattr(m, "downsample", None) is None for m in plain.modules() if isinstance(m, R.BasicBlock))


def test_stride_in_1x1_moves_the_stride():
    msra = R.resnet50(stride_in_1x1=True, width=8)
    tv = R.resnet50(width=8)
    assert msra.layer2[0].conv1.stride == (2, 2) and msra.layer2[0].conv2.stride == (1, 1)
    assert tv.layer2[0].conv1.stride == (1, 1) and tv.layer2[0].conv2.stride == (2, 2)
    x = torch.randn(1, 3, 64, 64)
    assert msra.forward_features(x).shape == tv.forward_features(x).shape == (1, 256, 2, 2)


def test_cifar_nets_match_the_paper_sizes():
    assert abs(_count(R.cifar_resnet(20)) - 0.27e6) < 0.01e6  # Table 6: 0.27M
    assert abs(_count(R.cifar_resnet(110)) - 1.7e6) < 0.05e6  # Table 6: 1.7M
    assert R.cifar_resnet(20)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_width_option_and_c4_split():
    model = R.resnet50(width=8).eval()
    assert model.stage_channels == [32, 64, 128, 256]
    trunk, head = R.split_c4(model)
    x = torch.randn(1, 3, 96, 64)
    feat = trunk(x)
    assert feat.shape == (1, 128, 6, 4)  # stride 16
    assert head(feat).shape == (1, 256, 3, 2)  # conv5_1 has stride 2
    assert torch.allclose(head(feat), model.forward_features(x))
    assert "layer3.0.conv1.weight" in trunk.state_dict()
    assert trunk.conv1 is model.conv1  # shared, not copied


def _randomize_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def test_frozen_bn_conversion_and_folding_keep_outputs():
    model = R.resnet50(width=8, num_classes=5).eval()
    _randomize_bn(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        convert_to_frozen_bn(model)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        assert torch.allclose(model(x), ref, atol=1e-5)
        fold_frozen_bn(model)
        assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
        assert (model(x) - ref).abs().max().item() < 1e-4


def test_freeze_at_stops_gradients_and_frozen_bn_stays_fixed():
    model = convert_to_frozen_bn(R.resnet18(width=8, num_classes=3))
    freeze_stages(model, 2)
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        model.train()(torch.randn(2, 3, 32, 32)).sum().backward()
        opt.step()
    assert model.conv1.weight.grad is None and model.layer1[0].conv1.weight.grad is None
    assert model.layer2[0].conv1.weight.grad is not None
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stats.items())


def test_recompute_bn_stats_equals_hand_computed_population_statistics():
    model = R.resnet18(width=8, num_classes=3)
    batches = [torch.randn(4, 3, 32, 32) * 3 + 1 for _ in range(3)]
    recompute_bn_stats(model, batches, num_batches=3)
    pixels = torch.cat([model.conv1(b).detach().permute(1, 0, 2, 3).reshape(8, -1) for b in batches], 1)
    assert torch.allclose(model.bn1.running_mean, pixels.mean(1), atol=1e-4)
    assert torch.allclose(model.bn1.running_var, pixels.var(1, unbiased=False), rtol=1e-3)
    # a deep layer's statistics are those of its input under batch-normalized layers above it
    assert model.layer4[1].bn2.running_var.min() > 0


@pytest.mark.parametrize("depth", [18, 50])
def test_training_with_frozen_bn_folded_into_the_convs_equals_torchvision_values_and_gradients(depth):
    # detres applies a frozen BN to the conv's weights in training (conv_bn); torchvision applies it to the output.
    # float64, so that rounding cannot flip a ReLU or a max-pool choice and the comparison is of the functions.
    ours = convert_to_frozen_bn(getattr(R, f"resnet{depth}")(width=16, num_classes=5)).double()
    _randomize_frozen_bn(ours)
    ref = _torchvision_like(depth, ours).double()
    ref.load_state_dict(ours.state_dict())
    ours.train(), ref.train()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    bn_calls = []
    for m in ours.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.register_forward_hook(lambda *_: bn_calls.append(1))
    out_ours, out_ref = ours(x), ref(x)
    assert not bn_calls, "in training no frozen BN should run on an activation"
    assert (out_ours - out_ref).abs().max().item() < 1e-9 * out_ref.abs().max().item()
    out_ours.square().sum().backward()
    out_ref.square().sum().backward()
    grads = dict(ref.named_parameters())
    for name, param in ours.named_parameters():
        expected = grads[name].grad
        assert (param.grad - expected).abs().max().item() <= 1e-9 * expected.abs().max().item(), name


def _torchvision_like(depth: int, ours: nn.Module) -> nn.Module:
    """torchvision's ResNet with FrozenBatchNorm2d and detres's width (its constructor fixes 64 channels)."""
    from detres.perf.peer_resnet import torchvision_stage

    ref = getattr(torchvision.models, f"resnet{depth}")(num_classes=5, norm_layer=FrozenBatchNorm2d)
    ref.conv1, ref.bn1 = nn.Conv2d(3, ours.conv1.out_channels, 7, 2, 3, bias=False), FrozenBatchNorm2d(16)
    for i in range(1, 5):
        setattr(ref, f"layer{i}", torchvision_stage(getattr(ours, f"layer{i}")))
    ref.fc = nn.Linear(ours.fc.in_features, 5)
    return ref


def _randomize_frozen_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
