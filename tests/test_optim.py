"""The optimizer helpers the AE and DDPM loops share (optim.py)."""
import pytest
import torch

from pdiff_core.optim import GraphedStep, adamw, warmup_cosine


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
    return net.weight.detach().cpu().clone(), losses, float(opt.param_groups[0]["lr"])


def test_graphed_step_on_cpu_is_the_plain_step():
    w_plain, l_plain, _ = _fit("cpu", graphed=False)
    w_step, l_step, _ = _fit("cpu", graphed=True)
    assert torch.equal(w_plain, w_step) and l_plain == l_step
    assert l_step[-1] < 0.5 * l_step[0]                 # and it did train


def test_schedule_reaches_zero_and_warms_up():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = adamw([p], 1.0, 0.0, "cpu")
    sched = warmup_cosine(opt, 10)
    seen = [opt.param_groups[0]["lr"]]
    for _ in range(10):
        opt.step()
        sched.step()
        seen.append(opt.param_groups[0]["lr"])
    assert seen[0] == pytest.approx(1.0) and seen[-1] == pytest.approx(0.0, abs=1e-9)
    assert max(seen) == pytest.approx(1.0) and seen[5] < seen[2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_replay_trains_like_eager_steps():
    """Replaying the captured step must follow the eager steps: same weights, same losses, and
    the learning rate the schedule wrote into the optimizer's tensor."""
    w_eager, l_eager, lr_eager = _fit("cuda", graphed=False)
    w_graph, l_graph, lr_graph = _fit("cuda", graphed=True)
    torch.testing.assert_close(w_graph, w_eager, rtol=1e-4, atol=1e-5)
    assert l_graph == pytest.approx(l_eager, rel=1e-4, abs=1e-6)
    assert lr_graph == pytest.approx(lr_eager) and lr_graph < 0.05
