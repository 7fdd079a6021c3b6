"""The analysis in words: a run's verdict and use-case statements from analysis.json's numbers, a
transfer run's verdict from transfer.json's, and the small readers of the figures they quote (the
pages, the HTML report and the CLI quote them through the same readers).

Plain answer first, then the evidence as short bullets. Run warnings come before everything:
a broken run's verdict means nothing. A difference whose 95 % interval holds 0 is never
called a gain."""
from __future__ import annotations


def zoo_kind(mem: dict) -> str:
    """analysis.json memorization's zoo kind (runs analysed before it was stored were trajectories)."""
    return (mem.get("zoo") or {}).get("kind", "trajectory")


def trajectory_figures(mem: dict) -> dict | None:
    """The generated models' d_traj figures (ratio_to_step, on_path_rate, ...); None for an
    independent zoo, which has no path between checkpoints."""
    return ((mem.get("trajectory") or {}).get("groups") or {}).get("generated")


def best_test(group: dict) -> float | None:
    """metrics.json: the test accuracy of a group's model chosen on validation, the only 'best' shown."""
    return (group.get("best_by_val") or {}).get("test_acc")


def pct(v: float | None, digits: int = 0) -> str:
    """A share in percent. One generated model of 200 is not '0 %', nor 199 of 200 '100 %': a share that
    rounds to either end without being there reads '<1 %' or '>99 %'."""
    if v is None:
        return "n/a"
    shown, unit = f"{100 * v:.{digits}f}", 10 ** -digits
    if 0 < v and float(shown) == 0:
        return f"<{unit:g} %"
    if v < 1 and float(shown) >= 100:
        return f">{100 - unit:g} %"
    return f"{shown} %"


def num(v: float | None, fmt: str = ".2f") -> str:
    return "n/a" if v is None else format(v, fmt)


def pp_figures(d: dict) -> tuple[float, float, float]:
    """A difference's diff, lo and hi in pp, rounded to 0.1 as printed."""
    return tuple(round(100 * d[k], 1) + 0.0 for k in ("diff", "lo", "hi"))   # + 0.0: no "-0.0"


def pp(d: dict) -> str:
    """'+0.3 pp (95 % CI -0.2 to +0.8; one example = 0.28 pp)' from metrics.difference."""
    diff, lo, hi = pp_figures(d)
    return f"{diff:+.1f} pp (95 % interval {lo:+.1f} to {hi:+.1f}; one test example = {100 * d['resolution']:.2f} pp)"


def interval_level(d: dict) -> float:
    """A transfer interval's coverage; a transfer.json from before `level` had 95 % intervals."""
    return d.get("level", 0.95)


def interval_words(d: dict, fmt) -> str:
    """'95 % interval a to b'; over too few held-out tasks for any 95 % interval (transfer's `level` < 0.95),
    'range a to b', with few_tasks_note said once beside."""
    span = f"{fmt(d['lo'])} to {fmt(d['hi'])}"
    return f"95 % interval {span}" if interval_level(d) >= 0.95 else f"range {span}"


def few_tasks_note(d: dict) -> str | None:
    """Why no difference is claimed over so few held-out tasks, or None when a 95 % interval exists."""
    level = interval_level(d)
    if level >= 0.95:
        return None
    return (f"With {d['n']} held-out task{'s' if d['n'] != 1 else ''} no 95 % interval exists: even their range "
            f"covers the median only {100 * level:.1f} % of the time, so no difference is claimed; 6 tasks or more "
            "give one (tasks_heldout).")


def compared(d: dict, what: str) -> str:
    """A difference in words that never calls noise a gain."""
    if not d["differs"]:
        return f"{what}: no difference, {pp(d)}"
    return f"{what}: {'higher' if d['diff'] > 0 else 'lower'}, {pp(d)}"


ZOO_MEANING = {
    "trajectory": "The checkpoints are consecutive optimizer steps of one run, so each one's nearest other checkpoint "
                  "is the next step: the replica threshold is about one step length, and a low replica rate is close "
                  "to guaranteed. The distance to the path between consecutive checkpoints (d_traj) is the fairer "
                  "test of novelty here.",
    "mixed": "The checkpoints are several short trajectories of consecutive steps: the replica threshold is about one "
             "step length within a trajectory, so a low replica rate says little; see d_traj beside it.",
    "independent": "The checkpoints are the ends of independent continuations from the base model, so the replica "
                   "threshold is the distance between two independent solutions: a replica is closer to one "
                   "checkpoint than independent runs come to each other.",
}


def ensemble_statement(r: dict) -> str:
    """The gains from 1 to k models, and the ensembles themselves at k: a larger gain from a weaker start
    is no better ensemble, so the comparison at k is said beside it (analyses before it existed lack it)."""
    iv = r["intervals"]
    k = r["k"][-1]
    at_k = iv.get("largest_difference")
    return (f"Ensembles of up to {k} models (logit average): {compared(iv['gain_generated'], 'generated, 1 to ' + str(k) + ' models')}; "
            f"{compared(iv['gain_originals'], 'originals, 1 to ' + str(k) + ' models')}; "
            f"{compared(iv['gain_difference'], 'generated gain minus original gain')}"
            + (f"; {compared(at_k, f'{k} generated against {k} originals')}" if at_k else "") + ".")


def init_statement(r: dict) -> str:
    reach = ", ".join(f"{k} {'never' if s is None else s}" for k, s in r["steps_to_target"].items())
    who = ("all starts equally" if len(r["fastest"]) == len(r["kinds"])
           else " and ".join(r["fastest"]) + (" starts" if len(r["fastest"]) > 1 else " start"))
    finals = "; ".join(compared(d, f"the {k} start's final test accuracy against random starts")
                       for k, d in r["final_test_vs_random"].items())
    finals = finals[:1].upper() + finals[1:]          # it opens a sentence
    starts = max((r.get("starts") or {}).values(), default=0)
    return (f"Fine-tuning from {', '.join(r['kinds'])} starts ({r['steps']} SGD steps, same data for all): fastest "
            f"to come within one validation example of the best final validation accuracy is {who} "
            f"(steps: {reach}; the mean of {starts} starts each on one seed, with no interval: a few steps apart "
            f"is no difference). {finals}.")


PARTLY = 0.1   # a copy measure below half but at least this share is named in the headline


def headline(mem: dict) -> str:
    """The one-line answer."""
    g = mem["groups"]["generated"]
    traj = trajectory_figures(mem) or {}
    if (g.get("replica_rate") or 0) >= 0.5:
        line = f"Mostly near-copies: {pct(g['replica_rate'])} of generated models sit closer to a checkpoint than the checkpoints' own 5th-percentile neighbour distance."
    elif (traj.get("on_path_rate") or 0) >= 0.5:
        line = (f"Mostly points on the training path: {pct(traj['on_path_rate'])} of generated models lie no farther "
                f"from the path between consecutive checkpoints than the path's own step-to-step wiggle.")
    elif (g.get("within_train_median") or 0) >= 0.5:
        line = "More copies than new solutions: generated models sit closer to the checkpoints than the checkpoints sit to each other."
    elif (g.get("smax_one") or 0) >= 0.5:
        line = (f"Not copies by distance, but {pct(g['smax_one'])} of generated models make exactly the test errors "
                f"of some checkpoint.")
    else:    # no measure reaches half: say which ones still find copies, so 49 % replicas is not called new
        shares = [(g.get("replica_rate"), "are near-copies of a checkpoint"),
                  (traj.get("on_path_rate"), "lie on the training path"),
                  (g.get("within_train_median"), "sit within the checkpoints' median neighbour distance"),
                  (g.get("smax_one"), "make exactly some checkpoint's test errors")]
        partly = [f"{pct(v)} {what}" for v, what in shares if (v or 0) >= PARTLY]
        line = ("Partly copies: " + "; ".join(partly) + "." if partly else
                "New by distance and by errors: generated models are neither near-copies of checkpoints nor their "
                f"error twins (each measure below {pct(PARTLY)}).")
    if (mem.get("dominated_share") or 0) >= 0.5:
        line += " A cheap baseline does at least as well for most of them."
    return line


def verdict(result: dict, warnings: list[str]) -> str:
    """Markdown: warnings, the one-line answer, then the evidence as bullets."""
    mem, sim = result["memorization"], result["similarity"]
    g = mem["groups"]["generated"]
    lines = [f"**Warning:** {w}" for w in warnings]
    if g.get("acc_mean") is None:
        return "\n\n".join(lines + ["No generated model has finite parameters, so there is nothing to compare."])
    lines.append(f"**{headline(mem)}**")
    zoo = zoo_kind(mem)
    bullets = [
        f"Zoo: {zoo}. {ZOO_MEANING.get(zoo, '')}",
        f"Replicas: {pct(g['replica_rate'])} of generated models (closer to a checkpoint than the 5th percentile of "
        f"the checkpoints' own nearest-neighbour distances); {pct(g['within_train_median'])} within the checkpoints' "
        f"median neighbour distance; median nearest-checkpoint distance {num(g['median_ratio_raw'])}x the checkpoints' own.",
    ]
    traj = trajectory_figures(mem)
    if traj:
        bullets.append(f"Trajectory: median distance to the path between consecutive checkpoints is "
                       f"{num(traj['ratio_to_step'])}x the mean step length; {pct(traj['on_path_rate'])} lie on the "
                       f"path (no farther from it than the 5th percentile of the path's own wiggle).")
    bullets.append(f"Errors: IoU with the most similar checkpoint {num(sim['og_max'])} on average (checkpoints among "
                   f"themselves {num(sim['oo'])}, generated among themselves {num(sim['gg'])}); {pct(g['smax_one'])} "
                   f"make exactly some checkpoint's test errors (checkpoints: {pct(mem['train_smax_one'])}).")
    matched = {k: v for k, v in mem["matched_by"].items() if v}
    if matched:
        best = max(matched, key=matched.get)
        bullets.append(f"Baselines: {pct(mem['dominated_share'])} of generated models are Pareto-dominated by a "
                       f"baseline model (at least as accurate and as novel, one strictly, on exact counts); "
                       f"{best} alone matches or beats {pct(matched[best])} of them.")
    else:
        bullets.append("Baselines: no baseline model reaches a generated model's accuracy at the same novelty.")
    acc = result.get("accuracy") or {}
    if acc.get("median_difference"):
        bullets.append(compared(acc["median_difference"], "Median test accuracy, generated minus originals"))
    if result["ensembles"].get("statement"):
        bullets.append(result["ensembles"]["statement"])
    if result["initialization"].get("statement"):
        bullets.append(result["initialization"]["statement"])
    return "\n\n".join(lines) + "\n\n" + "\n".join(f"- {b}" for b in bullets)


def transfer_verdict(s: dict) -> str:
    """transfer.json in one plain line: does generation beat the k-shot probe and the nearest task, by how much."""
    median_pp = lambda d: f"{100 * d['median']:+.1f} pp ({interval_words(d, lambda x: f'{100 * x:+.1f}')})"
    parts = []
    for b, words in (("linear_probe", f"the {s['shots']}-shot linear probe"), ("nearest_task", "the nearest training task's head")):
        d = s["comparisons"].get(f"generated_best - {b}")
        if d:
            how = ("beats" if d["median"] > 0 else "loses to") if d["differs"] else \
                "is no different from" if interval_level(d) >= 0.95 else "is not shown different from"
            parts.append(f"{how} {words}: {median_pp(d)}")
    z = s["zero_shot"]
    n = len(s["heldout_tasks"])
    few = few_tasks_note(z["generated_best"])
    return (f"On {n} held-out task{'s' if n != 1 else ''}, the generated head chosen on the support set "
            + "; ".join(parts) + f". Median test accuracy: generated (chosen on the support set) "
            f"{100 * z['generated_best']['median']:.1f} %, median of all generated heads "
            f"{100 * z['generated_median']['median']:.1f} %, "
            f"oracle {100 * z['oracle']['median']:.1f} %. "
            f"{100 * s['memorization']['share_generated_matching_a_training_head']:.0f} % of generated heads make "
            "a training task's errors (IoU >= 0.95)." + (f" {few}" if few else ""))
