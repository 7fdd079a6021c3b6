"""Base training and the three zoo kinds of checkpoint collection."""
import copy

import numpy as np
import pytest
import torch

from pdiff_core import collect
from pdiff_core.config import ConfigError, preset_config, validate
from pdiff_core.health import reference_accuracy
from pdiff_core.prepare import prepare, seed_everything


def cfg_of(**kw):
    return preset_config("tiny", analysis=False, **kw)


@pytest.fixture(scope="module")
def based():
    """A trained tiny base model (digits, MLP width 16), shared by the zoo tests."""
    torch.set_num_threads(1)
    cfg = cfg_of()
    prep = prepare(cfg)
    gen = seed_everything(cfg.seed)
    model = copy.deepcopy(prep.model)
    info = collect.train_base(model, prep.data, cfg, "cpu", gen, lambda *a: None)
    return prep, model, gen.get_state(), info


def zoo_of(based, **kw):
    prep, model, gen_state, _ = based
    cfg = cfg_of(**kw)
    gen = torch.Generator()
    gen.set_state(gen_state)
    m = copy.deepcopy(model)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    zoo = collect.collect_zoo(m, prep.names, prep.data, cfg, "cpu", gen, lambda *a: None)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())   # the base model is left as it was
    return cfg, zoo


def base_vector(based):
    prep, model, _, _ = based
    return torch.cat([model.state_dict()[n].reshape(-1) for n in prep.names])


def test_trajectory_zoo_is_one_run_of_consecutive_steps(based):
    cfg, zoo = zoo_of(based)
    assert zoo.theta.shape == (cfg.k, len(base_vector(based)))
    assert zoo.trajectory.dtype == torch.int64 and zoo.trajectory.tolist() == [0] * cfg.k
    assert zoo.info["kind"] == "trajectory" and zoo.info["runs"] == 1 and zoo.info["lr"] == cfg.collect_lr
    steps = (zoo.theta[1:] - zoo.theta[:-1]).norm(dim=1)
    assert (steps > 0).all()                                       # every step moved


def test_trajectory_matches_a_plain_sgd_loop(based):
    """The trajectory zoo is exactly K steps of SGD (momentum 0.9) on the selected parameters,
    drawing minibatches from the shared generator: same numbers as before zoo kinds existed."""
    prep, model, gen_state, _ = based
    cfg, zoo = zoo_of(based)
    m = copy.deepcopy(model).eval()
    gen = torch.Generator()
    gen.set_state(gen_state)
    params = dict(m.named_parameters())
    for n, p in params.items():
        p.requires_grad_(n in prep.names)
    opt = torch.optim.SGD([params[n] for n in prep.names], lr=cfg.collect_lr, momentum=0.9)
    batches = collect.minibatches(len(prep.data.y_train), cfg.batch_size, gen)
    rows = []
    for _ in range(cfg.k):
        idx = next(batches)
        loss = torch.nn.functional.cross_entropy(m(prep.data.x_train[idx]), prep.data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        rows.append(torch.cat([params[n].detach().reshape(-1) for n in prep.names]).clone())
    assert torch.equal(torch.stack(rows), zoo.theta)


def test_independent_zoo_keeps_the_last_step_of_separate_runs(based):
    cfg, zoo = zoo_of(based, zoo="independent", zoo_steps=4)
    assert zoo.theta.shape[0] == cfg.k
    assert zoo.trajectory.tolist() == list(range(cfg.k))          # every row its own run
    assert zoo.info["runs"] == cfg.k and zoo.info["steps_per_run"] == 4
    d = torch.cdist(zoo.theta.double(), zoo.theta.double())
    assert (d + torch.eye(cfg.k) > 0).all()                        # no two checkpoints are equal
    # each one is 4 steps from the base model, not a point along one trajectory
    far = (zoo.theta - base_vector(based)).norm(dim=1)
    assert far.std() < 0.5 * far.mean()
    # a 4-step run seeded like row 0 reproduces row 0, and a 4-step run is not a 1-step run
    _, longer = zoo_of(based, zoo="independent", zoo_steps=5)
    assert not torch.equal(longer.theta, zoo.theta)
    _, again = zoo_of(based, zoo="independent", zoo_steps=4)
    assert torch.equal(again.theta, zoo.theta)


def test_independent_runs_match_one_run_alone(based):
    """The batched (vmapped) runs are independent: row j equals a plain SGD loop with run j's data order."""
    prep, model, gen_state, _ = based
    cfg, zoo = zoo_of(based, zoo="independent", zoo_steps=3)
    gen = torch.Generator()
    gen.set_state(gen_state)
    seeds = torch.randint(0, 2 ** 62, (cfg.k,), generator=gen).tolist()
    for j in (0, cfg.k - 1):
        m = copy.deepcopy(model).eval()
        params = dict(m.named_parameters())
        for n, p in params.items():
            p.requires_grad_(n in prep.names)
        opt = torch.optim.SGD([params[n] for n in prep.names], lr=cfg.collect_lr, momentum=0.9)
        batches = collect.minibatches(len(prep.data.y_train), cfg.batch_size, torch.Generator().manual_seed(seeds[j]))
        for _ in range(3):
            idx = next(batches)
            loss = torch.nn.functional.cross_entropy(m(prep.data.x_train[idx]), prep.data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        row = torch.cat([params[n].detach().reshape(-1) for n in prep.names])
        assert torch.allclose(row, zoo.theta[j], atol=1e-5), j


def test_mixed_zoo_segments(based):
    cfg, zoo = zoo_of(based, zoo="mixed", zoo_runs=5)             # k=24: runs of 5, 5, 5, 5, 4
    assert collect.run_lengths(cfg) == [5, 5, 5, 5, 4]
    ids = zoo.trajectory.tolist()
    assert ids == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5 + [4] * 4
    assert zoo.info["runs"] == 5 and zoo.info["run_lengths"] == [5, 5, 5, 5, 4]
    theta, base = zoo.theta, base_vector(based)
    starts = [ids.index(r) for r in range(5)]
    # every run starts one step from the base model, and the runs differ from one another
    first = (theta[starts] - base).norm(dim=1)
    within = torch.stack([(theta[i + 1] - theta[i]).norm() for i in range(len(ids) - 1) if ids[i] == ids[i + 1]])
    assert first.max() < 3 * within.mean()
    assert (torch.cdist(theta[starts], theta[starts]) + torch.eye(5) > 0).all()
    # a run's last step is farther from the base than its first
    ends = [starts[r + 1] - 1 for r in range(4)] + [len(ids) - 1]
    assert ((theta[ends] - base).norm(dim=1) > first).all()


def test_zoo_config_errors():
    with pytest.raises(ConfigError, match="zoo must be"):
        validate(cfg_of(zoo="random"))
    with pytest.raises(ConfigError, match="k >= 2\\*zoo_runs"):
        validate(cfg_of(zoo="mixed", zoo_runs=13))                 # k=24
    validate(cfg_of(zoo="mixed", zoo_runs=12))
    validate(cfg_of(zoo="trajectory", zoo_runs=13))                # only the mixed zoo uses zoo_runs
    for bad in (0, -1):
        with pytest.raises(ConfigError, match="zoo_runs must be a positive integer"):
            validate(cfg_of(zoo_runs=bad))
        with pytest.raises(ConfigError, match="zoo_steps must be a positive integer"):
            validate(cfg_of(zoo_steps=bad))
    with pytest.raises(ConfigError, match="base_min_steps"):
        validate(cfg_of(base_min_steps=-1))


def test_divergence_halves_the_rate_and_records_it(based):
    prep = based[0]
    names = [n for n in prep.model.state_dict() if n.endswith(("weight", "bias"))]   # every parameter
    _, model, gen_state, _ = based
    for kind in ("trajectory", "independent"):
        lines = []
        cfg = cfg_of(layers="all", collect_lr=5.0, zoo=kind, zoo_steps=3)
        gen = torch.Generator()
        gen.set_state(gen_state)
        zoo = collect.collect_zoo(copy.deepcopy(model), names, prep.data, cfg, "cpu", gen, lambda *a: None,
                                  log=lines.append)
        assert 2 <= zoo.info["lr_halvings"] <= collect.MAX_HALVINGS and zoo.info["lr"] == 5.0 / 2 ** zoo.info["lr_halvings"]
        assert torch.isfinite(zoo.theta).all()
        assert any("diverged at collect_lr=5 " in line for line in lines)
        assert "for a margin" in lines[-1]


def test_checkpoint_spread_counts_steps_within_a_trajectory_only():
    """Two trajectories of 2 rows, far apart: their steps are 1 long, the jump between them is not a step.
    An independent zoo (every row its own run) has no steps at all."""
    from pdiff_core.collect import checkpoint_spread
    theta = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [11.0, 0.0]])
    s = checkpoint_spread(theta, torch.tensor([0, 0, 1, 1]))
    assert s["mean_step_l2"] == pytest.approx(1.0)
    assert checkpoint_spread(theta, torch.arange(4))["mean_step_l2"] is None
    assert checkpoint_spread(theta, torch.zeros(4, dtype=torch.int64))["mean_step_l2"] == pytest.approx(11 / 3)


def test_step_budget_has_a_floor():
    cfg = cfg_of(base_epochs=5, base_min_steps=300, batch_size=128)
    assert collect.base_step_budget(cfg, 200) == (300, 1)          # 5 epochs of one batch would be 5 steps
    assert collect.base_step_budget(cfg, 128 * 100) == (500, 100)  # epochs win on a big dataset
    assert collect.base_step_budget(cfg_of(base_epochs=5, base_min_steps=0), 200) == (5, 1)


def test_base_training_on_a_small_npz_reaches_the_reference(tmp_path):
    """300 rows (195 for training: one batch an epoch). Before the step floor this trained for 10
    steps and scored ~73 % test against the reference's ~92 %."""
    from sklearn.datasets import load_digits
    torch.set_num_threads(1)
    d = load_digits()
    keep = np.random.default_rng(0).permutation(len(d.target))[:300]
    path = tmp_path / "small.npz"
    np.savez(path, X=d.data[keep].astype(np.float32), y=d.target[keep])
    cfg = preset_config("digits-quick", dataset="npz", data_root=str(path), analysis=False)
    prep = prepare(cfg)
    model = copy.deepcopy(prep.model)
    info = collect.train_base(model, prep.data, cfg, "cpu", seed_everything(cfg.seed), lambda *a: None)
    assert info["steps"] == cfg.base_min_steps and 1 <= info["best_step"] <= info["steps"]
    model.eval()
    with torch.no_grad():
        correct = int((model(prep.data.x_test).argmax(-1) == prep.data.y_test).sum())
        val = int((model(prep.data.x_val).argmax(-1) == prep.data.y_val).sum())
    assert val == round(info["best_val_acc"] * len(prep.data.y_val))   # the model holds the best-on-val weights
    ref = reference_accuracy(prep.data, cfg.seed)
    n = len(prep.data.y_test)
    assert 100 * (ref["test_correct"] - correct) <= 3 * n, (correct, ref["test_correct"], n)


def test_run_directory_carries_the_zoo(runs_dir):
    """originals.safetensors holds `trajectory` (int64, one id per row); metrics.json holds `zoo`,
    `base_training`, `reference` and `warnings`; status.json holds `warnings` too."""
    from pdiff_core import pipeline, runs
    cfg = cfg_of(zoo="mixed", zoo_runs=3)
    d = runs.run_path("zoo", must_exist=False)
    d.mkdir(parents=True)
    pipeline.execute(cfg, d, prepare(cfg))
    orig, _ = runs.read_safetensors(d / "originals.safetensors")
    assert orig["trajectory"].dtype == torch.int64 and orig["trajectory"].tolist() == [0] * 8 + [1] * 8 + [2] * 8
    assert orig["params"].shape[0] == len(orig["trajectory"])
    m = runs.read_json(d / "metrics.json")
    assert m["zoo"]["kind"] == "mixed" and m["zoo"]["runs"] == 3 and m["zoo"]["run_lengths"] == [8, 8, 8]
    assert m["base_training"]["steps"] == cfg.base_min_steps
    assert set(m["reference"]) >= {"method", "val_acc", "test_acc"} and isinstance(m["warnings"], list)
    assert runs.read_json(d / "status.json")["warnings"] == m["warnings"]
