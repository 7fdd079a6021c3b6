import numpy as np
import pytest
import torch

from pdiff_core.evaluate import Evaluator, evaluate_loop, split_at_first_generated
from pdiff_core.models import build_model
from pdiff_core.params import Codec, select_names


def make_case(arch, shape, layers, n=12, seed=0):
    torch.manual_seed(seed)
    model = build_model(arch, shape, 5, 8)
    # give BatchNorm non-trivial running statistics, as a trained base model has
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, *shape))
    model.eval()
    names = select_names(model, layers)
    state = model.state_dict()
    base = torch.cat([state[nm].reshape(-1) for nm in names])
    thetas = base + 0.3 * torch.randn(n, base.numel())
    codec = Codec.fit(names, [tuple(state[nm].shape) for nm in names], thetas)
    x, y = torch.randn(40, *shape), torch.randint(0, 5, (40,))
    return model, codec, thetas, x, y


@pytest.mark.parametrize("arch,shape,layers", [
    ("mlp", (1, 8, 8), "last_bn"), ("mlp", (1, 8, 8), "all"), ("cnn", (1, 8, 8), "last_bn"),
    ("cnn", (1, 40), "head"), ("mlp", (10,), "bn2.running_mean,bn2.running_var,bn2.weight"),
])
def test_batched_equals_per_model_loop(arch, shape, layers):
    model, codec, thetas, x, y = make_case(arch, shape, layers)
    ref = evaluate_loop(model, codec, thetas, x, y)
    for share in (True, False):
        ev = Evaluator(model, codec, chunk=5, x_batch=16, share_prefix=share)
        got = ev.evaluate(thetas, x, y)
        assert np.array_equal(got.preds, ref.preds)
        assert np.array_equal(got.acc, ref.acc)
        # the prefix's activations computed once and reused (fine-tuning curves) give the same answer
        cached = ev.evaluate(thetas, ev.features(x), y, features=True)
        assert np.array_equal(cached.preds, ref.preds)
    # logits agree with one module loaded by hand
    net = model
    net.load_state_dict(codec.unflatten(thetas[3]), strict=False)
    assert torch.allclose(ev.logits(thetas[3:4], x)[0], net(x), atol=1e-5)


@pytest.mark.parametrize("arch,shape", [("mlp", (1, 8, 8)), ("cnn", (1, 8, 8)), ("resnet18", (3, 8, 8))])
def test_batchnorm_is_evaluated_as_its_affine_map(arch, shape):
    """The evaluator runs every BatchNorm as EvalBatchNorm (x * scale + shift), whose logits match
    nn.BatchNorm's eval mode; the model it was given keeps its own BatchNorm modules."""
    from pdiff_core.evaluate import EvalBatchNorm
    model, codec, thetas, x, y = make_case(arch, shape, "all" if arch != "resnet18" else "head", n=4)
    ev = Evaluator(model, codec, share_prefix=False)
    kinds = {type(m) for m in ev.suffix.modules()}
    assert EvalBatchNorm in kinds and not any(issubclass(k, torch.nn.modules.batchnorm._BatchNorm) for k in kinds)
    assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    for i in range(len(thetas)):
        net = model
        net.load_state_dict(codec.unflatten(thetas[i]), strict=False)
        torch.testing.assert_close(ev.logits(thetas[i:i + 1], x)[0], net(x), atol=2e-5, rtol=1e-5)


def test_generated_running_stats_are_used():
    model, codec, thetas, x, y = make_case("mlp", (10,), "bn2.running_mean,bn2.running_var,bn2.weight")
    ev = Evaluator(model, codec)
    a = ev.logits(thetas[:1], x)
    shifted = codec.unflatten(thetas[0].clone())
    shifted["bn2.running_mean"] += 5.0
    b = ev.logits(codec.flatten(shifted)[None], x)
    assert not torch.allclose(a, b)


def test_prefix_split_point():
    model = build_model("mlp", (1, 8, 8), 10, 8)
    assert split_at_first_generated(model, select_names(model, "last_bn")) == 2   # flat, fc1 run once
    assert split_at_first_generated(model, select_names(model, "head")) == 7
    assert split_at_first_generated(model, select_names(model, "all")) == 1


def test_nonfinite_vectors_are_flagged_not_crashing():
    model, codec, thetas, x, y = make_case("mlp", (1, 8, 8), "last_bn", n=4)
    thetas[1, 3] = float("nan")
    thetas[2, 0] = float("inf")
    res = Evaluator(model, codec).evaluate(thetas, x, y)
    assert res.finite.tolist() == [True, False, False, True]
    assert np.isnan(res.acc[1]) and np.isnan(res.acc[2]) and np.isfinite(res.acc[[0, 3]]).all()
    assert (res.preds[1] == -1).all() and (res.preds[0] >= 0).all()
