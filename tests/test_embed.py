"""The parameter maps' helper process: same numbers as in this process, and a clean fallback.
UMAP is made unimportable here (its cold import alone takes 30-40 s); the browser test's quick
demo runs UMAP through the helper for real."""
import sys

import numpy as np
import pytest

from pdiff_core import embed


@pytest.fixture(autouse=True)
def no_umap(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)
    yield
    embed.stop_helper()


def points(n=90, d=40, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


@pytest.mark.slow
def test_helper_gives_the_numbers_this_process_gives():
    x = points()
    maps, status, timings = embed.PendingMaps(x, 7).result()
    assert timings["where"] == "helper process", timings
    ref, _ = embed.param_maps(x, 7)
    assert maps.keys() == ref.keys() == {"pca", "pca_explained", "tsne"}
    for k in ref:
        assert maps[k].shape == ((2,) if k == "pca_explained" else (90, 2)) and maps[k].dtype == np.float32
        np.testing.assert_array_equal(maps[k], ref[k], err_msg=k)
    assert status == embed.umap_status() and status.startswith("skipped")   # umap is unimportable here
    # the axes' shares of variance: sorted, within (0, 1], and what the PCs' own variances say
    share = maps["pca_explained"]
    assert 1 >= share[0] >= share[1] > 0
    np.testing.assert_allclose(share[1] / share[0], maps["pca"][:, 1].var() / maps["pca"][:, 0].var(), rtol=1e-3)
    # a second request goes to the same process and answers for its own points
    pid = embed.start_helper().proc.pid
    x2 = points(seed=5)
    other, _, _ = embed.PendingMaps(x2, 8).result()
    assert embed.start_helper().proc.pid == pid
    np.testing.assert_array_equal(other["tsne"], embed.param_maps(x2, 8)[0]["tsne"])
    assert not np.allclose(other["tsne"], maps["tsne"])


@pytest.mark.slow
def test_a_dead_helper_falls_back_to_this_process():
    x = points(seed=1)
    helper = embed.start_helper()
    helper.proc.kill()
    helper.proc.wait()
    pending = embed.PendingMaps(x, 3)                  # notices the dead helper and starts a new one
    assert pending.helper is not helper and pending.helper.alive()
    pending.helper.proc.kill()                         # dies with the request under way
    maps, _, timings = pending.result()
    assert timings["where"].startswith("in this process (the helper process ended"), timings
    ref, _ = embed.param_maps(x, 3)
    np.testing.assert_array_equal(maps["tsne"], ref["tsne"])


@pytest.mark.slow
def test_a_small_map_stays_in_this_process_unless_a_helper_is_running():
    """tiny's map (169 points) is quicker to compute here than to start the helper for; digits-quick's is not."""
    from pdiff_core.analysis import map_points
    from pdiff_core.config import preset_config
    assert map_points(preset_config("tiny")) < embed.HELPER_MIN_POINTS <= map_points(preset_config("digits-quick"))
    embed.stop_helper()
    x = points(seed=2)
    assert not embed.helper_pays(len(x)) and embed.helper_pays(embed.HELPER_MIN_POINTS)
    maps, _, timings = embed.PendingMaps(x, 4, embed.helper_pays(len(x))).result()
    assert timings["where"] == "in this process (90 points: quicker than starting the helper)", timings
    assert embed._helper is None                            # none was started
    np.testing.assert_array_equal(maps["tsne"], embed.param_maps(x, 4)[0]["tsne"])
    embed.start_helper()                                    # as the pipeline does for a run with a large map
    assert embed.helper_pays(len(x))
    assert embed.PendingMaps(x, 4, embed.helper_pays(len(x))).result()[2]["where"] == "helper process"


@pytest.mark.slow
def test_giving_up_while_waiting_stops_the_helper():
    pending = embed.PendingMaps(points(n=1500, d=60), 0)   # t-SNE of 1500 points: a few seconds
    proc = pending.helper.proc

    def cancel():
        raise KeyboardInterrupt("cancelled by user")

    with pytest.raises(KeyboardInterrupt):
        pending.result(wait=cancel)
    assert proc.poll() is not None and embed._helper is None
    assert embed.start_helper().alive()                   # the next run gets a fresh one


@pytest.mark.slow
def test_helper_reports_a_failed_request_and_the_fallback_raises_the_same():
    x = points(n=3)                                        # too few points for t-SNE's perplexity
    x[0, 0] = np.nan
    with pytest.raises(ValueError):
        embed.PendingMaps(x, 0).result()


def test_no_helper_at_all_computes_here(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")   # Popen fails: the helper cannot start
    embed.stop_helper()
    x = points(seed=2)
    maps, _, timings = embed.PendingMaps(x, 1).result()
    assert timings["where"] == "in this process (the helper process could not start)"
    np.testing.assert_array_equal(maps["tsne"], embed.param_maps(x, 1)[0]["tsne"])
