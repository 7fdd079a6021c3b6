"""pdiff_core.words: the verdict's words follow the numbers, warnings first, noise never a gain."""
from pdiff_core import words as R


def diff(d, lo, hi, n=360):
    return {"diff": d, "lo": lo, "hi": hi, "resolution": 1 / n, "differs": lo > 0 or hi < 0}


def test_a_difference_inside_its_interval_is_no_difference():
    assert R.compared(diff(0.004, -0.002, 0.011), "gain").startswith("gain: no difference, +0.4 pp")
    assert R.compared(diff(-0.004, -0.011, 0.002), "gain").startswith("gain: no difference")
    assert R.compared(diff(0.02, 0.01, 0.03), "gain").startswith("gain: higher, +2.0 pp")
    assert "one test example = 0.28 pp" in R.compared(diff(0.02, 0.01, 0.03), "gain")


def result(replica=0.0, on_path=None, smax_one=0.0, dominated=0.0, zoo="trajectory"):
    gen = {"acc_mean": 0.9, "replica_rate": replica, "within_train_median": 0.0, "median_ratio_raw": 3.0,
           "smax_one": smax_one}
    traj = {"groups": {"generated": {"ratio_to_step": 2.0, "on_path_rate": on_path}}} if on_path is not None else None
    return {"memorization": {"groups": {"generated": gen}, "trajectory": traj, "zoo": {"kind": zoo},
                             "train_smax_one": 1.0, "matched_by": {"average": dominated},
                             "dominated_share": dominated},
            "similarity": {"og_max": 0.9, "oo": 0.95, "gg": 0.9},
            "accuracy": {"median_difference": diff(0.001, -0.003, 0.006)},
            "ensembles": {}, "initialization": {}}


def test_verdict_opens_with_warnings_then_one_line_answer():
    text = R.verdict(result(replica=0.8), ["the base model is 12 pp below the reference"])
    first, second = text.split("\n\n")[:2]
    assert first == "**Warning:** the base model is 12 pp below the reference"
    assert second.startswith("**Mostly near-copies: 80 %")
    assert "no difference" in text and "higher" not in text.split("Median test accuracy")[1].split("\n")[0]


def test_headline_follows_the_strongest_evidence():
    assert R.headline(result(on_path=0.7)["memorization"]).startswith("Mostly points on the training path")
    assert R.headline(result(smax_one=0.76)["memorization"]).startswith("Not copies by distance, but 76 %")
    h = R.headline(result(dominated=0.9)["memorization"])
    assert h.startswith("New by distance") and h.endswith("at least as well for most of them.")
    # below half on every measure, but not new: what still finds copies is named (it said "New" at 49 %)
    h = R.headline(result(replica=0.49, smax_one=0.2)["memorization"])
    assert h == ("Partly copies: 49 % are near-copies of a checkpoint; 20 % make exactly some checkpoint's "
                 "test errors."), h
    assert R.headline(result(replica=0.09)["memorization"]).startswith("New by distance")
    t = R.verdict(result(zoo="independent"), [])
    assert "independent continuations" in t and "Trajectory:" not in t
    assert "about one step length" in R.verdict(result(), [])


def test_a_share_never_rounds_to_none_or_all_when_it_is_not():
    assert [R.pct(v) for v in (0, 1 / 200, 0.494, 0.5, 199 / 200, 1)] == ["0 %", "<1 %", "49 %", "50 %", ">99 %",
                                                                        "100 %"]
    assert [R.pct(v, 1) for v in (1 / 5000, 0.9996, None)] == ["<0.1 %", ">99.9 %", "n/a"]


def test_use_case_statements_say_the_comparison_at_k_and_the_limits_of_a_fastest_start():
    """A larger ensemble gain from a weaker single model is no better ensemble: the comparison at the largest k
    is said beside the gains. The fastest start is one seed's mean of a few starts, said so."""
    ens = {"k": [1, 16], "intervals": {"gain_generated": diff(0.059, 0.04, 0.08), "gain_originals": diff(0.007, -0.01, 0.02),
                                      "gain_difference": diff(0.052, 0.03, 0.07),
                                      "largest_difference": diff(-0.022, -0.042, -0.004)}}
    text = R.ensemble_statement(ens)
    assert text.endswith("16 generated against 16 originals: lower, -2.2 pp (95 % interval -4.2 to -0.4; one test "
                         "example = 0.28 pp)."), text
    del ens["intervals"]["largest_difference"]                           # an analysis from before it was stored
    assert "against 16 originals" not in R.ensemble_statement(ens)
    init = {"kinds": ["generated", "original", "random"], "starts": {"generated": 4, "original": 4, "random": 4},
            "steps": 60, "steps_to_target": {"generated": 55, "original": 53, "random": 56}, "fastest": ["original"],
            "final_test_vs_random": {"generated": diff(0.001, -0.01, 0.012)}}
    text = R.init_statement(init)
    assert "is original start (steps: generated 55, original 53, random 56; the mean of 4 starts each on one seed, " \
           "with no interval: a few steps apart is no difference)" in text, text
