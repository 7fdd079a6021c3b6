import pytest
import torch

from pdiff_core.models import build_model
from pdiff_core.params import Codec, LayerError, select_names


def test_subsets_pick_the_right_tensors():
    m = build_model("mlp", (1, 8, 8), 10, 16)
    assert select_names(m, "last_bn") == ["bn1.weight", "bn1.bias", "bn2.weight", "bn2.bias"]
    assert select_names(m, "head") == ["head.weight", "head.bias"]
    assert select_names(m, "all") == [n for n, _ in m.named_parameters()]
    # explicit names come back in state_dict order, running stats are allowed
    assert select_names(m, "head.bias, bn2.running_mean") == ["bn2.running_mean", "head.bias"]


def test_resnet18_last_bn_is_2048_params():
    m = build_model("resnet18", (3, 32, 32), 10, 64)
    names = select_names(m, "last_bn")
    assert sum(m.state_dict()[n].numel() for n in names) == 2048
    assert all(n.startswith("layer4_1.bn") for n in names)


def test_running_stats_alone_are_refused_before_any_run():
    # collection trains by gradient and keeps BatchNorm's statistics fixed: buffers alone once failed mid-run
    from pdiff_core.config import preset_config
    from pdiff_core.prepare import layer_error
    m = build_model("mlp", (1, 8, 8), 10, 16)
    with pytest.raises(LayerError, match="running statistics.*bn2.weight"):
        select_names(m, "bn2.running_mean, bn2.running_var")
    assert "running statistics" in layer_error(preset_config("tiny", layers="bn2.running_mean,bn2.running_var"))


def test_unknown_layer_lists_valid_names():
    m = build_model("mlp", (1, 8, 8), 10, 16)
    with pytest.raises(LayerError) as e:
        select_names(m, "bn9.weight")
    msg = str(e.value)
    assert "bn9.weight" in msg and "last_bn" in msg and "head.bias" in msg and "\n" not in msg


def test_codec_round_trip_is_exact_inverse():
    torch.manual_seed(0)
    shapes = [(4, 3), (5,), (2, 2, 2)]
    names = ["a", "b", "c"]
    theta = torch.cat([torch.randn(30, 12) * 3 + 1, torch.randn(30, 5) * 0.01 - 2, torch.randn(30, 8)], 1)
    codec = Codec.fit(names, shapes, theta)
    z = codec.normalize(theta)
    # each tensor is z-scored with its own mean/std across checkpoints
    for chunk in torch.split(z, codec.sizes, dim=1):
        assert abs(chunk.mean().item()) < 1e-5 and abs(chunk.std().item() - 1) < 1e-4
    assert torch.allclose(codec.denormalize(z), theta, atol=1e-5)
    state = codec.unflatten(theta[0])
    assert [tuple(state[n].shape) for n in names] == shapes
    assert torch.equal(codec.flatten(state), theta[0])
    batched = codec.unflatten(theta)
    assert batched["c"].shape == (30, 2, 2, 2)
    again = Codec.from_metadata(codec.to_metadata())
    assert again == codec


def test_constant_tensor_does_not_divide_by_zero():
    theta = torch.cat([torch.ones(5, 3), torch.randn(5, 2)], 1)
    codec = Codec.fit(["const", "x"], [(3,), (2,)], theta)
    z = codec.normalize(theta)
    assert torch.isfinite(z).all()
    assert torch.allclose(codec.denormalize(z), theta)
