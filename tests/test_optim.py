"""The optimizer helpers the AE and DDPM loops share (optim.py)."""
import pytest
import torch

from pdiff_core.optim import CosineAnnealing, GraphedStep, Optimizer, adamw, warmup_cosine


def _fit(device: str, graphed: bool, steps: int = 20) -> tuple[torch.Tensor, list[float], float]:
    """A small regression with the loops' optimizer and schedule; returns weights, losses, final lr."""
    torch.manual_seed(0)
    x, w_true = torch.randn(64, 8, device=device), torch.randn(8, 1, device=device)
    y = x @ w_true
    net = torch.nn.Linear(8, 1).to(device)
    opt = adamw(net.parameters(), 0.05, 0.0, device)
    sched = warmup_cosine(opt, steps)

    def one_step():
        loss = torch.nn.functional.mse_loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    step = GraphedStep(one_step, device) if graphed else one_step
    losses = []
    for _ in range(steps):
        losses.append(float(step()))
        sched.step()
    return net.weight.detach().cpu().clone(), losses, float(opt.lr)


def test_graphed_step_on_cpu_is_the_plain_step():
    w_plain, l_plain, _ = _fit("cpu", graphed=False)
    w_step, l_step, _ = _fit("cpu", graphed=True)
    assert torch.equal(w_plain, w_step) and l_plain == l_step
    assert l_step[-1] < 0.5 * l_step[0]                 # and it did train


def test_zero_grad_keeps_the_gradient_tensors_only_when_asked():
    p = torch.nn.Parameter(torch.ones(3))
    opt = Optimizer([p], 0.1)
    (2 * p).sum().backward()
    g = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is g and torch.equal(g, torch.zeros(3))      # the same tensor, zeroed (torch.optim's way)
    (2 * p).sum().backward()
    opt.zero_grad()
    assert p.grad is None


def test_schedule_reaches_zero_and_warms_up():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = adamw([p], 1.0, 0.0, "cpu")
    sched = warmup_cosine(opt, 10)
    seen = [opt.lr]
    for _ in range(10):
        opt.step()
        sched.step()
        seen.append(opt.lr)
    assert seen[0] == pytest.approx(1.0) and seen[-1] == pytest.approx(0.0, abs=1e-9)
    assert max(seen) == pytest.approx(1.0) and seen[5] < seen[2]


def _train(make_opt, make_sched, steps: int = 30) -> list[torch.Tensor]:
    """A small MLP trained with the given optimizer and schedule; its final parameters."""
    torch.manual_seed(1)
    x, y = torch.randn(96, 6), torch.randint(3, (96,))
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = make_opt(net.parameters())
    sched = make_sched(opt)
    for i in range(steps):
        if i == 5:
            net[0].bias.grad = None       # a parameter without a gradient this step: skipped, as torch.optim does
        loss = torch.nn.functional.cross_entropy(net(x[i % 3::3]), y[i % 3::3])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if i == 5:
            net[0].bias.grad = None
        opt.step()
        sched.step()
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd"])
def test_optimizer_gives_torch_optims_numbers_bit_for_bit(kind):
    """Optimizer (torch.optim's functional update, no torch._dynamo import) against the
    torch.optim class the loops used before, with the schedule each loop uses."""
    ours = {"adam": lambda ps: Optimizer(ps, 3e-3, "adam"),
            "adamw": lambda ps: adamw(ps, 2e-3, 2e-6, "cpu"),
            "sgd": lambda ps: Optimizer(ps, 0.3, "sgd", momentum=0.9)}[kind]
    theirs = {"adam": lambda ps: torch.optim.Adam(ps, lr=3e-3),
              "adamw": lambda ps: torch.optim.AdamW(ps, lr=2e-3, weight_decay=2e-6, fused=True),
              "sgd": lambda ps: torch.optim.SGD(ps, lr=0.3, momentum=0.9)}[kind]
    if kind == "adam":          # base training: cosine annealing over the step budget
        sched_ours, sched_theirs = (lambda o: CosineAnnealing(o, 30),
                                    lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 30))
    elif kind == "adamw":       # the AE and DDPM loops: warm-up then cosine
        sched_ours = lambda o: warmup_cosine(o, 30)
        sched_theirs = lambda o: torch.optim.lr_scheduler.LambdaLR(o, warmup_cosine(Optimizer([], 1.0), 30).factor)
    else:                       # collection: a constant rate
        sched_ours = sched_theirs = lambda o: type("Constant", (), {"step": lambda self: None})()
    a, b = _train(ours, sched_ours), _train(theirs, sched_theirs)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], _train(ours, sched_ours, steps=29)[0])   # and the steps did move the weights


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_replay_trains_like_eager_steps():
    """Replaying the captured step must follow the eager steps: same weights, same losses, and
    the learning rate the schedule wrote into the optimizer's tensor."""
    w_eager, l_eager, lr_eager = _fit("cuda", graphed=False)
    w_graph, l_graph, lr_graph = _fit("cuda", graphed=True)
    torch.testing.assert_close(w_graph, w_eager, rtol=1e-4, atol=1e-5)
    assert l_graph == pytest.approx(l_eager, rel=1e-4, abs=1e-6)
    assert lr_graph == pytest.approx(lr_eager) and lr_graph < 0.05
