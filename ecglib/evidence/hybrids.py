"""The hybrids chapter's analysis (C12): a conv + pooling front end feeding an LSTM, against a pure LSTM and a
residual CNN on CinC 2017: speed (untrained throughput and training speed), accuracy against length and cost
(a Pareto front), order sensitivity (shuffled segments), published scores, and the verdict.

    sw = sweeps(base, contenders(lstm_depth, pool, cnn_depth), crops_s, crop_s, pools, lstm_depths, ...)
    runs = with_measures(experiments.run_sweep(sw["all"]), records)
    c12(runs, sw, ...)
"""
from __future__ import annotations

import functools
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .. import experiments, plots, protocol, stats
from . import recipe, seed_list
from ..data import CINC_CLASSES
from ..diagnostics import flops_per_sample, throughput
from ..ledger import Verdict, fmt_ci
from ..models import build_model
from ..plots import FAMILY_COLORS, FAMILY_LABELS, ci_lines
from ..protocol import is_usable, usable
from ..verdicts import Judgement, all_of, judge, margin, not_worse


def label(family, depth, pool=None) -> str:
    """One readable name per model configuration."""
    if family == "convlstm":
        return f"conv+pool {int(pool)} → LSTM ×{int(depth)}"
    return f"{FAMILY_LABELS[family]} ×{int(depth)}"


def contenders(lstm_depth: int, pool: int, cnn_depth: int) -> dict[str, dict]:
    """The three models of the length sweep: family -> model spec."""
    return {"lstm": dict(family="lstm", depth=lstm_depth),
            "convlstm": dict(family="convlstm", depth=lstm_depth, pool=pool),
            "rescnn": dict(family="rescnn", depth=cnn_depth)}


def tune(base: dict, families: dict, crop_s, seeds, executor="local", fresh=False) -> dict[str, protocol.Selection]:
    """protocol.select for each contender at its depth (and pooling) on crop_s crops: every family gets the same
    search (learning rate, readout, forget bias or weight decay) on the validation records, never the test set."""
    return {f: protocol.select({**base, "crop_s": crop_s, **{k: v for k, v in spec.items() if k not in ("family", "depth")}},
                               spec["family"], spec["depth"], seeds=list(seeds), executor=executor, fresh=fresh)
            for f, spec in families.items()}


def tuned(families: dict, selections: dict) -> dict[str, dict]:
    """The contenders' specs with their selected values (lr, readout, ...) added."""
    return {f: {**spec, **selections[f].chosen} for f, spec in families.items()}


def matched_width(families: dict, width: int, fs, crop_s) -> int:
    """The residual CNN's width whose forward FLOPs per crop come closest to the hybrid's at `width`: the CNN that
    competes with the hybrid at matched compute."""
    k, length = len(CINC_CLASSES), int(round(crop_s * fs))
    target = flops_per_sample(build_model(width=width, n_classes=k, **model_spec(families["convlstm"])), length)
    cost = functools.cache(lambda w: flops_per_sample(build_model(width=w, n_classes=k,
                                                                  **model_spec(families["rescnn"])), length))
    lo, hi = 4, 4 * width   # a CNN's FLOPs grow strictly with width: bisect to the pair around the target
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if cost(mid) < target else (lo, mid)
    return min((lo, hi), key=lambda w: abs(math.log(cost(w) / target)))


def sweeps(base: dict, families: dict, crops_s, crop_s, pools, lstm_depths, shallow_cnn_depth, seeds,
           control_s=None, cnn_width=None, permute_s=None, rates=None, whole_s=None,
           whole_families=("convlstm", "rescnn"), whole_seeds=None) -> dict:
    """length: the contenders at every crop; front: the hybrid's pooling x depth grid at crop_s; shallow: a residual
    CNN with a shorter receptive field at the longest crop (the order probe's second prediction); at the longest
    crop too, control: the hybrid and the CNN trained and tested on segments of control_s seconds shuffled, and
    matched: the CNN at width cnn_width (matched compute); rate: the residual CNN at crop_s and each sampling rate
    of `rates` (Hz; what rate the task needs); whole: `whole_families` on crops of whole_s seconds, which hold every
    record whole (shorter ones zero-padded on the left), with whole_seeds seeds (default: seeds), kept out of `all` so
    that no verdict's "longest crop" moves;
    all: each once. Every run at the longest crop carries
    the order probe (permute at permute_s); the shorter crops leave it out, so their configs equal the baselines
    chapter's and are trained once for both chapters."""
    if crop_s not in crops_s:
        raise ValueError(f"crop_s={crop_s} must be one of crops_s={crops_s}: the Pareto plot compares all families there")
    seeds = seed_list(seeds)
    longest = max(crops_s)
    at_longest = {"crop_s": longest, **({"probes": ["permute"], "permute_s": list(permute_s)} if permute_s else {})}
    length = [c for f in families.values() for crop in crops_s
              for c in experiments.sweep({**base, **f, **(at_longest if crop == longest else {"crop_s": crop})},
                                         seed=seeds)]
    hybrid = {k: v for k, v in families["convlstm"].items() if k not in ("depth", "pool")}
    front = experiments.sweep({**base, **hybrid, **(at_longest if crop_s == longest else {"crop_s": crop_s})},
                              pool=list(pools), depth=list(lstm_depths), seed=seeds)
    shallow = experiments.sweep({**base, **families["rescnn"], "depth": shallow_cnn_depth, **at_longest}, seed=seeds)
    control = [] if control_s is None else [
        c for f in ("convlstm", "rescnn")
        for c in experiments.sweep({**base, **families[f], **at_longest, "shuffle_s": control_s}, seed=seeds)]
    matched = [] if cnn_width is None else experiments.sweep(
        {**base, **families["rescnn"], "width": cnn_width, **at_longest}, seed=seeds)
    rate = [] if not rates else experiments.sweep(
        {**base, **families["rescnn"], **(at_longest if crop_s == longest else {"crop_s": crop_s})},
        fs=list(rates), seed=seeds)
    whole_seeds = seeds if whole_seeds is None else seed_list(whole_seeds)
    whole = [] if whole_s is None else [c for f in whole_families for c in
                                        experiments.sweep({**base, **families[f], "crop_s": whole_s}, seed=whole_seeds)]
    return {"length": length, "front": front, "shallow": shallow, "control": control, "matched": matched,
            "rate": rate, "whole": whole, "all": list(dict.fromkeys(length + front + shallow + control + matched + rate))}


def epoch_mean(record: dict, field: str) -> float:
    """Mean over the run's training epochs of one history field (seconds, samples_per_s)."""
    return float(np.mean([e[field] for e in record["history"]]))


def with_measures(runs: pd.DataFrame, records: dict[str, dict]) -> pd.DataFrame:
    """Add model (a readable name; a shuffled-segment control or another width says so), epoch_s,
    train_samples_per_s and challenge_f1 to each run."""
    widths = runs["width"] if "width" in runs else pd.Series(np.nan, index=runs.index)
    base_width = widths.mode().iloc[0] if widths.notna().any() else np.nan
    shuffled = runs["shuffle_s"] if "shuffle_s" in runs else pd.Series(np.nan, index=runs.index)
    model = [label(f, d, p) + (f", width {w:g} (matched compute)" if w != base_width and not np.isnan(w) else "")
             + (f", trained on shuffled {sh:g} s segments" if isinstance(sh, (int, float)) and not np.isnan(sh) else "")
             for f, d, p, w, sh in zip(runs["family"], runs["depth"], runs["pool"], widths, shuffled)]
    return runs.assign(model=model,
                       epoch_s=[epoch_mean(records[k], "seconds") for k in runs["key"]],
                       train_samples_per_s=[epoch_mean(records[k], "samples_per_s") for k in runs["key"]],
                       challenge_f1=[stats.challenge_f1(records[k]) for k in runs["key"]])


def names(families: dict, shallow_cnn_depth: int, cnn_width=None, control_s=None) -> dict[str, str]:
    """family -> model name of the length sweep's contenders, plus "shallow" for the shallower residual CNN,
    "matched" for the CNN at matched compute and "<family>-shuffled" for the shuffled-segment controls."""
    n = {f: label(spec["family"], spec["depth"], spec.get("pool")) for f, spec in families.items()}
    n["shallow"] = label("rescnn", shallow_cnn_depth)
    if cnn_width is not None:
        n["matched"] = f"{n['rescnn']}, width {cnn_width:g} (matched compute)"
    if control_s is not None:
        for f in ("convlstm", "rescnn"):
            n[f"{f}-shuffled"] = f"{n[f]}, trained on shuffled {control_s:g} s segments"
    return n


def palettes(model_names: dict, pools) -> tuple[dict, dict]:
    """Colours by model name (family colours; the shallow CNN keeps its family's, and ci_lines dashes it) and by
    pooling factor (darker for more pooling)."""
    palette = {model_names[f]: FAMILY_COLORS[f] for f in ("lstm", "convlstm", "rescnn")}
    palette[model_names["shallow"]] = FAMILY_COLORS["rescnn"]
    pools = sorted(set(pools))
    shades = sns.dark_palette(FAMILY_COLORS["convlstm"], len(pools) + 1, reverse=True)[:-1]
    return palette, dict(zip(pools, shades))


def recipe_text(runs: pd.DataFrame, records: dict, base: dict, train_fraction, selections: dict) -> str:
    n_train = records[runs["key"].iloc[0]]["train"]["n"]
    n_div = int((runs["status"] != "ok").sum())
    chosen = "; ".join(f"{label(s.family, s.depth, s.config.get('pool'))}: "
                       + ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in s.chosen.items())
                       for s in selections.values())
    return (f"Every model trains under the book's protocol: at most {base['epochs']} epochs over {train_fraction:.0%} "
            f"of the training split ({n_train} records), batches of {base['batch_size']}, {recipe(base)}, and "
            f"class-weighted cross-entropy. Each contender was tuned first, with the same six candidates per family "
            f"(protocol.select: {' / '.join(dict.fromkeys(s.tried for s in selections.values()))}), on the validation "
            f"records; selected: {chosen}. The pooling grid and the controls reuse their family's selection.\n\n"
            f"{len(runs)} stored runs are behind this chapter; {n_div} diverged (a diverged run keeps the metrics of "
            "its last finite epoch, or none, and counts with those).")


# ---- 1. speed ----

def measure_speed(specs: dict[str, dict], seconds, fs, width, batch, steps, repeats) -> pd.DataFrame:
    """Samples per second of untrained models (forward + backward), models interleaved inside each repeat so that
    a change in the machine's load hits all of them alike: repeat, seconds, model, samples_per_s."""
    rows = []
    for repeat in range(repeats):
        for s in seconds:
            for name, spec in specs.items():
                torch.manual_seed(repeat)
                model = build_model(width=width, n_classes=len(CINC_CLASSES), **spec)
                t = throughput(model, int(round(s * fs)), batch, steps=steps, warmup=1)
                rows.append(dict(repeat=repeat, seconds=s, model=name, samples_per_s=t["samples_per_s"]))
    return pd.DataFrame(rows)


def model_spec(spec: dict) -> dict:
    """What build_model needs of a contender's spec (its selected training values left out)."""
    return {k: v for k, v in spec.items() if k in ("family", "depth", "pool")}


def speed_specs(families: dict, lstm_depth: int, pools) -> dict[str, dict]:
    specs = {label(**model_spec(families[f])): model_spec(families[f]) for f in ("lstm", "rescnn")}
    return specs | {label("convlstm", lstm_depth, p): dict(family="convlstm", depth=lstm_depth, pool=p) for p in pools}


def machine_text(repeats: int) -> str:
    return (f"<small>Measured on {experiments.device_name('cpu')}, {torch.get_num_threads()} torch threads, "
            f"{repeats} repeats.</small>")


def fig_throughput(speed: pd.DataFrame, colors: dict, fs, batch):
    fig, ax = plt.subplots()
    ci_lines(ax, stats.summarise(speed, ["model", "seconds"], "samples_per_s", log=True), x="seconds", hue="model",
             logx=True, labels={m: m for m in colors}, colors=colors)
    ax.set_yscale("log")
    ax.set(xlabel="sequence length (s)", ylabel="samples per second (log scale)",
           title=f"Throughput versus length at {fs} Hz, batch {batch}")
    return plots.finish(fig, ncol=2)


def speedups(speed: pd.DataFrame, over: str) -> pd.DataFrame:
    """Speed-up of every model over `over`, per repeat (same machine, same moment), then its geometric mean and
    95% CI over repeats: model, seconds, mean, low, high, n."""
    ref = speed[speed["model"] == over].set_index(["repeat", "seconds"])["samples_per_s"].rename("ref")
    r = speed[speed["model"] != over].join(ref, on=["repeat", "seconds"])
    return stats.summarise(r.assign(ratio=r["samples_per_s"] / r["ref"]), ["model", "seconds"], "ratio", log=True)


def speedup_table(speed: pd.DataFrame, over: str) -> pd.DataFrame:
    s = speedups(speed, over)
    s = s.assign(cell=[fmt_ci(m, lo, hi, 2) for m, lo, hi in s[["mean", "low", "high"]].values])
    return s.pivot(index="model", columns="seconds", values="cell").reset_index().rename(
        columns={x: f"{x:g} s" for x in s["seconds"].unique()})


def speedup_text(speed: pd.DataFrame, model_names: dict, pool, fs, repeats) -> str:
    far = speed["seconds"].max()
    hyb = model_names["convlstm"]
    def at(over):
        s = speedups(speed, over)
        return s[s["seconds"] == far].set_index("model").loc[hyb, ["mean", "low", "high"]]
    return (f"Speed-up over the pure LSTM (×, geometric mean [95% CI] over {repeats} repeats). At {far:g} s "
            f"({int(far * fs)} samples), the hybrid with pooling {pool} processes {fmt_ci(*at(model_names['lstm']), 2)} "
            f"times as many samples per second as the LSTM, and {fmt_ci(*at(model_names['rescnn']), 2)} times as many "
            "as the residual CNN.")


def training_speedup(length_runs: pd.DataFrame, model_names: dict, over: str = "lstm") -> pd.DataFrame:
    """Training samples/s of the hybrid and the CNN over the LSTM, paired by seed, per crop length: geometric mean
    ratio with its 95% CI (model, family, crop_s, mean, low, high, n)."""
    parts = [stats.paired_diff(length_runs, "family", "train_samples_per_s", f, over, within=["crop_s"], log=True)
             .assign(family=f) for f in ("convlstm", "rescnn")]
    out = pd.concat(parts, ignore_index=True)
    return out.assign(model=out["family"].map(model_names))


def training_speedup_table(train_speed: pd.DataFrame) -> pd.DataFrame:
    return train_speed[["model", "crop_s", "mean", "low", "high", "n"]].astype({"crop_s": str}).rename(
        columns={"crop_s": "crop (s)", "mean": "speed-up over LSTM (×)", "n": "seeds"})


# ---- 2. accuracy against length, 3. the Pareto front ----

def fig_length(length_runs: pd.DataFrame, colors: dict):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.3))
    for ax, metric in ((ax1, "test_score"), (ax2, "epoch_s")):
        ci_lines(ax, stats.summarise(length_runs, ["model", "crop_s"], metric, log=metric == "epoch_s"), x="crop_s",
                 hue="model", logx=True, labels={m: m for m in colors}, colors=colors)
    ax1.set(xlabel="crop length (s)", ylabel="test challenge F1", title="Accuracy versus length")
    ax2.set(xlabel="crop length (s)", ylabel="seconds per epoch (log scale)", yscale="log", title="Cost versus length")
    return plots.finish(fig, ncol=2)


def length_text(length_runs: pd.DataFrame, model_names: dict) -> str:
    longest = length_runs["crop_s"].max()
    at = length_runs[length_runs["crop_s"] == longest]
    f1 = stats.summarise(at, ["model"], "test_score").set_index("model")
    t = stats.summarise(at, ["model"], "epoch_s", log=True).set_index("model")
    return f"At {longest:g} s crops: " + "; ".join(
        f"{n} test challenge F1 {fmt_ci(*f1.loc[n, ['mean', 'low', 'high']])} at {t.loc[n, 'mean']:.1f} s per epoch"
        for f, n in model_names.items() if f != "shallow" and n in f1.index) + "."


def whole_table(length_runs: pd.DataFrame, whole_runs: pd.DataFrame) -> pd.DataFrame:
    """Test challenge F1 of each model trained and tested on whole records beside the same model at the longest crop
    of the length sweep (usable runs, mean and 95% CI over seeds), and whole minus crop, paired by seed."""
    longest = length_runs["crop_s"].max()
    both = protocol.usable(pd.concat([length_runs[(length_runs["crop_s"] == longest)
                                                  & length_runs["model"].isin(whole_runs["model"])], whole_runs]))
    rows = []
    for model, g in both.groupby("model", sort=False):
        whole, crop = g[g["crop_s"] != longest], g[g["crop_s"] == longest]
        d = stats.paired_diff(g.assign(at=np.where(g["crop_s"] == longest, "crop", "whole")), "at", "test_score",
                              "whole", "crop", missing="nan").iloc[0]
        rows.append({"model": model, f"{longest:g} s crops": fmt_ci(*stats.ci(crop["test_score"], bounded=True)),
                     "whole records": fmt_ci(*stats.ci(whole["test_score"], bounded=True)),
                     "whole − crop": fmt_ci(d["mean"], d["low"], d["high"]), "mean": d["mean"], "low": d["low"],
                     "high": d["high"], "seeds": int(d["n"])})
    return pd.DataFrame(rows, columns=["model", f"{longest:g} s crops", "whole records", "whole − crop", "mean", "low",
                                       "high", "seeds"])


def whole_text(table: pd.DataFrame | None, whole_runs: pd.DataFrame | None, whole_s, longest) -> str:
    """What whole records change, in words; runs that failed to train are counted, never averaged in."""
    if whole_runs is None or whole_runs.empty:
        return "*No whole-record run in this profile (whole_s is None).*"
    failed = whole_runs[~protocol.is_usable(whole_runs)]
    parts = [f"{r['model']}: whole minus {longest:g} s crops {r['whole − crop']}" for _, r in table.iterrows()]
    text = (f"Trained and tested on whole records ({whole_s:g} s windows, shorter records zero-padded): "
            + ("; ".join(parts) if parts else "no model has usable runs at both lengths") + " (test challenge F1, "
            "paired by seed). A difference whose interval lies above zero means the model uses the rest of the "
            "record; one that straddles zero means the longest crop already held what it uses.")
    if len(failed):
        text += " Failed to train: " + ", ".join(f"{m} {len(g)} of {(whole_runs['model'] == m).sum()} seeds"
                                                  for m, g in failed.groupby("model")) + "."
    return text


def rate_table(rate_runs: pd.DataFrame, fs) -> pd.DataFrame:
    """Test challenge F1 of the residual CNN per sampling rate (usable runs, mean and 95% CI over seeds), and its
    difference from the rate the chapter trains at (`fs`), paired by seed."""
    ok = protocol.usable(rate_runs)
    t = stats.summarise(ok, ["fs"], "test_score").rename(columns={"n": "seeds"})
    diffs = [stats.paired_diff(ok, "fs", "test_score", f, fs, missing="nan").iloc[0] if f != fs
             else pd.Series({"mean": 0.0, "low": 0.0, "high": 0.0}) for f in t["fs"]]
    return t.assign(**{f"minus {fs:g} Hz": [fmt_ci(d["mean"], d["low"], d["high"]) for d in diffs]})


def rate_text(table: pd.DataFrame, fs) -> str:
    """Which rates score within the CI of the chapter's rate, in words."""
    if table.empty or table["mean"].isna().all():
        return "*No usable run of the sampling-rate sweep.*"
    best = table.loc[table["mean"].idxmax()]
    return (f"The residual CNN scores best at {best['fs']:g} Hz (test challenge F1 "
            f"{fmt_ci(best['mean'], best['low'], best['high'])}); the table gives each rate's difference from "
            f"{fs:g} Hz, the rate this chapter and the baselines train at, paired by seed. A difference whose interval "
            f"excludes zero means the rate matters at this crop length; the kernel is the same number of samples at "
            f"every rate, so a higher rate also narrows the CNN's receptive field in seconds.")


def pareto(runs: pd.DataFrame, crop_s) -> pd.DataFrame:
    """Test challenge F1 and seconds per epoch (geometric) per model at one crop; `front`: nothing faster is better."""
    at = runs[(runs["crop_s"] == crop_s) & ~runs["model"].str.contains("shuffled")]   # controls see other data
    acc = stats.summarise(at, ["model", "family", "pool", "depth"], "test_score")
    cost = stats.summarise(at, ["model"], "epoch_s", log=True).set_index("model").add_suffix("_s")
    p = acc.join(cost, on="model").sort_values("mean_s").reset_index(drop=True)
    return p.assign(front=p["mean"] >= p["mean"].cummax())


def _bar(mean, low, high):
    return None if math.isnan(low) else [[mean - low], [high - mean]]


def fig_pareto(p: pd.DataFrame, pool_colors: dict, crop_s):
    markers = dict(zip(sorted(p["depth"].unique()), "os^Dv<>"))
    fig, ax = plt.subplots(figsize=(9, 5))
    seen: dict = {}     # models of one family (sizes, widths) share its colour and differ in marker
    for _, r in p.iterrows():
        hybrid = r["family"] == "convlstm"
        n = seen[r["family"]] = seen.get(r["family"], -1) + 1
        ax.errorbar(r["mean_s"], r["mean"], xerr=_bar(r["mean_s"], r["low_s"], r["high_s"]),
                    yerr=_bar(r["mean"], r["low"], r["high"]), capsize=3, label=r["model"], ms=8,
                    fmt=markers.get(r["depth"], "o") if hybrid else "*PXhd"[n % 5],
                    color=pool_colors.get(r["pool"], FAMILY_COLORS["convlstm"]) if hybrid else FAMILY_COLORS[r["family"]])
    ax.plot(p.loc[p["front"], "mean_s"], p.loc[p["front"], "mean"], "--", color="0.4", lw=1)
    ax.set_xscale("log")
    ax.set(xlabel="seconds per training epoch (log scale)", ylabel="test challenge F1",
           title=f"Accuracy versus training cost at {crop_s:g} s crops")
    return plots.finish(fig, ncol=2)


def pareto_table(p: pd.DataFrame) -> pd.DataFrame:
    return p[["model", "mean", "low", "high", "n", "mean_s", "front"]].rename(
        columns={"mean": "test challenge F1", "n": "seeds", "mean_s": "s per epoch", "front": "Pareto"})


# ---- 4. order ----

def permutation_drops(runs: pd.DataFrame, records: dict) -> pd.DataFrame:
    """One row per run and segment length: drop = intact minus shuffled test macro-F1 (the permute probe). Runs
    without the probe (the shorter crops) have no row."""
    perm = []
    for k, r in runs.set_index("key").iterrows():
        if "permute" not in records[k]["probes"]:
            continue
        scales = pd.DataFrame(records[k]["probes"]["permute"]).astype({"macro_f1": float})  # null (diverged) -> NaN
        perm.append(scales.assign(key=k, model=r["model"], family=r["family"], crop_s=r["crop_s"], seed=r["seed"],
                                  permute_s=scales["seconds"], drop=r["test_macro_f1"] - scales["macro_f1"]))
    return pd.concat(perm, ignore_index=True)


def receptive_fields(families: dict, model_names: dict, shallow_cnn_depth: int, width: int) -> dict[str, int]:
    """Analytical receptive fields (samples): the two residual CNNs and the hybrid's conv front end."""
    k = len(CINC_CLASSES)
    return {model_names["rescnn"]: build_model(width=width, n_classes=k, **model_spec(families["rescnn"])).receptive_field,
            model_names["shallow"]: build_model("rescnn", shallow_cnn_depth, width, n_classes=k).receptive_field,
            model_names["convlstm"]: build_model(width=width, n_classes=k, **model_spec(families["convlstm"])).receptive_field}


def rf_text(rf: dict, model_names: dict, fs) -> str:
    deep, shallow, hyb = model_names["rescnn"], model_names["shallow"], model_names["convlstm"]
    return (f"Analytical receptive fields at {fs} Hz: {deep} {rf[deep]} samples ({rf[deep] / fs:.2f} s), {shallow} "
            f"{rf[shallow]} samples ({rf[shallow] / fs:.2f} s); the hybrid's conv front end {rf[hyb]} samples "
            f"({rf[hyb] / fs:.2f} s), after which the LSTM sees the whole crop.")


def fig_order(order: pd.DataFrame, colors: dict, rf: dict, model_names: dict, fs):
    fig, ax = plt.subplots()
    ci_lines(ax, stats.summarise(order, ["model", "permute_s"], "drop"), x="permute_s", hue="model", logx=True,
             labels={m: m for m in colors}, colors=colors)
    ax.axhline(0, color="0.3", lw=0.8)
    for name, ls in ((model_names["rescnn"], ":"), (model_names["shallow"], "-.")):   # receptive fields
        ax.axvline(rf[name] / fs, color=colors[name], ls=ls, lw=1.5)
    ax.set(xlabel="shuffled segment length (s)", ylabel="macro-F1 drop (intact − shuffled)",
           title=f"Order sensitivity on {order['crop_s'].max():g} s crops")
    return plots.finish(fig, ncol=2)


def order_effects(order: pd.DataFrame, runs: pd.DataFrame, model_names: dict) -> dict:
    """At the longest segment: drops per model (summarise), intact scores, and the hybrid's drop minus the deep
    CNN's, paired by seed; usable runs only (a model at chance has nothing to lose to shuffling)."""
    runs = usable(runs)
    big = order["permute_s"].max()
    at_big = order[(order["permute_s"] == big) & order["key"].isin(runs["key"])]
    drops = stats.summarise(at_big, ["model"], "drop").set_index("model")
    pair = at_big[at_big["model"].isin([model_names["convlstm"], model_names["rescnn"]])]
    hyb_vs_cnn = stats.paired_diff(pair, "family", "drop", "convlstm", "rescnn", missing="nan").iloc[0]
    intact = stats.summarise(runs[runs["crop_s"] == order["crop_s"].max()], ["model"], "test_macro_f1").set_index("model")
    return {"big": big, "drops": drops, "hyb_vs_cnn": hyb_vs_cnn, "intact": intact}


def order_table(o: dict) -> pd.DataFrame:
    t = o["drops"].join(o["intact"].add_suffix("_intact")).reset_index()
    return t[["model", "mean_intact", "mean", "low", "high", "n"]].rename(
        columns={"mean_intact": "intact macro-F1", "mean": f"drop at {o['big']:g} s", "n": "seeds"})


def drop_of(o: dict, name: str) -> str:
    return fmt_ci(*o["drops"].loc[name, ["mean", "low", "high"]]) if name in o["drops"].index else "n/a"


def invariance(order: pd.DataFrame, name: str, rf_samples: int, fs) -> str:
    """Does a CNN ignore shuffles of segments at least twice its receptive field (drop CI within ±0.02)?"""
    band = margin("C12", "drop").value
    beyond = stats.summarise(order[(order["model"] == name) & (order["permute_s"] >= 2 * rf_samples / fs)],
                             ["permute_s"], "drop")
    if beyond.empty:
        return f"no segment length is twice the {name}'s receptive field"
    inside = ((beyond["low"] >= -band) & (beyond["high"] <= band)).all()
    scales = ", ".join(f"{v:g}" for v in beyond["permute_s"])
    return (f"for segments of {scales} s (at least twice its receptive field) the {name}'s drop is "
            + (f"within ±{band:g} at every scale, as invariance predicts" if inside else
               f"not within ±{band:g} everywhere, so the measurement does not confirm invariance there"))


def order_text(order: pd.DataFrame, o: dict, rf: dict, model_names: dict, fs) -> str:
    n = model_names
    d = o["hyb_vs_cnn"]
    return (f"The receptive-field argument checked: {invariance(order, n['rescnn'], rf[n['rescnn']], fs)}; "
            f"{invariance(order, n['shallow'], rf[n['shallow']], fs)}.\n\n"
            f"With {o['big']:g} s segments the macro-F1 drop is {drop_of(o, n['rescnn'])} for the {n['rescnn']}, "
            f"{drop_of(o, n['shallow'])} for the {n['shallow']}, {drop_of(o, n['lstm'])} for the LSTM and "
            f"{drop_of(o, n['convlstm'])} for the hybrid. The hybrid's drop minus the deep CNN's, paired by seed: "
            f"{fmt_ci(d['mean'], d['low'], d['high'])}.")


# ---- 5. published scores ----

def best_models(runs: pd.DataFrame) -> dict[str, pd.Series]:
    """Per family, the (model, crop) with the best mean validation score (challenge F1): not selected on the test
    set. The controls (shuffled-segment training, the matched-compute width) are not candidates, nor are runs that
    failed to train (protocol.usable): a family without a usable run has no best model."""
    runs = usable(runs[~runs["model"].str.contains("shuffled|matched")])
    by_model = runs.groupby(["model", "family", "crop_s"], as_index=False)["val_score"].mean()
    return {f: by_model[by_model["family"] == f].sort_values("val_score", na_position="first").iloc[-1]
            for f in ("convlstm", "rescnn", "lstm") if (by_model["family"] == f).any()}


def best_runs(runs: pd.DataFrame, best: dict) -> pd.DataFrame:
    """The runs of the best models (none when no family has a usable run)."""
    return pd.concat([runs.iloc[:0]] + [runs[(runs["model"] == b["model"]) & (runs["crop_s"] == b["crop_s"])]
                                        for b in best.values()])


def published_table(runs: pd.DataFrame, best: dict, fs) -> pd.DataFrame:
    rows = []
    for b in best.values():
        sel = runs[(runs["model"] == b["model"]) & (runs["crop_s"] == b["crop_s"])]
        m, lo, hi = stats.mean_ci(sel["challenge_f1"])
        rows.append({"model": f"ours: {b['model']}, {b['crop_s']:g} s crops at {fs} Hz", "challenge F1": m,
                     "95% CI": "no CI (one seed)" if math.isnan(lo) else f"[{lo:.3f}, {hi:.3f}]",
                     "evaluated on": f"our held-out 15% of the public training set, {len(sel)} seeds"})
    rows += [{"model": "best challenge entries (Clifford et al. 2017)", "challenge F1": 0.83, "95% CI": "",
              "evaluated on": "hidden test set (about 0.83)"},
             {"model": "Zihlmann et al. 2017: 4 conv blocks + 3-layer BiLSTM", "challenge F1": 0.821, "95% CI": "",
              "evaluated on": "hidden test set"}]
    return pd.DataFrame(rows)


# ---- 6. controls: shuffled-segment training and matched compute ----

def control_effect(runs: pd.DataFrame, model_names: dict) -> pd.Series:
    """What order beyond control_s is worth to the hybrid beyond what it is worth to the CNN: per seed, (intact -
    shuffled-trained) test challenge F1 of the hybrid minus the same of the CNN, at the longest crop."""
    longest = runs["crop_s"].max()
    runs = usable(runs)
    at = runs[runs["crop_s"] == longest].set_index(["model", "seed"])["test_score"]
    get = lambda name: at.xs(name, level="model") if name in at.index.get_level_values("model") else pd.Series(dtype=float)
    loss = lambda f: get(model_names[f]) - get(model_names.get(f"{f}-shuffled", ""))
    d = (loss("convlstm") - loss("rescnn")).dropna()
    mean, low, high = stats.mean_ci(d)
    return pd.Series({"mean": mean, "low": low, "high": high, "n": len(d)})


def matched_effect(runs: pd.DataFrame, model_names: dict) -> pd.Series:
    """The hybrid minus the residual CNN at matched compute, test challenge F1 at the longest crop, paired by seed
    (usable runs)."""
    longest = runs["crop_s"].max()
    runs = usable(runs)
    at = runs[(runs["crop_s"] == longest) & runs["model"].isin([model_names["convlstm"], model_names.get("matched")])]
    at = at.assign(who=np.where(at["model"] == model_names["convlstm"], "hybrid", "cnn"))
    return stats.paired_diff(at, "who", "test_score", "hybrid", "cnn", missing="nan").iloc[0]


def remedy_sweeps(selections: dict, seeds, remedy: str | None) -> dict[str, list]:
    """The hybrid and the residual CNN at their selected settings (crop_s crops) with the standard remedy `remedy`
    (protocol.REMEDIES): the Baselines chapter's equal-effort runs, which this chapter reads, not retrains."""
    if remedy is None:
        return {}
    if remedy not in protocol.REMEDIES:
        raise ValueError(f"remedy={remedy!r} is not a standard remedy; known: {sorted(protocol.REMEDIES)}")
    return {f: protocol.remedy_sweeps(selections[f].config, seeds, {remedy: protocol.REMEDIES[remedy]})[remedy]
            for f in ("convlstm", "rescnn")}


def remedy_effect(runs: pd.DataFrame) -> dict:
    """Under the remedy: the hybrid minus the residual CNN (usable runs, test challenge F1, paired by seed), and how
    many seeds of each trained."""
    ok = usable(runs)
    return {"diff": stats.paired_diff(ok, "family", "test_score", "convlstm", "rescnn", missing="nan").iloc[0],
            "trained": {f: f"{ok[ok['family'] == f]['seed'].nunique()}/{runs[runs['family'] == f]['seed'].nunique()}"
                        for f in ("convlstm", "rescnn")},
            "score": {f: stats.ci(ok[ok["family"] == f]["test_score"], bounded=True) for f in ("convlstm", "rescnn")}}


def remedy_text(r: dict, remedy: str, crop_s) -> str:
    d = r["diff"]
    return (f"Under the standard remedy ({remedy}: {protocol.describe_remedy(protocol.REMEDIES[remedy])}), at "
            f"{crop_s:g} s crops: the hybrid trained in {r['trained']['convlstm']} seeds and scored "
            f"{fmt_ci(*r['score']['convlstm'])}, the residual CNN (full width, so more compute than the hybrid) trained "
            f"in {r['trained']['rescnn']} and scored {fmt_ci(*r['score']['rescnn'])}; hybrid minus CNN, paired by seed, "
            f"{fmt_ci(d['mean'], d['low'], d['high'])} ({int(d['n'])} pairs).")


def compute_table(families: dict, model_names: dict, width: int, cnn_width, fs, crop_s) -> pd.DataFrame:
    """Parameters and forward FLOPs per crop of each contender: what 'matched compute' matches."""
    k, length = len(CINC_CLASSES), int(round(crop_s * fs))
    specs = {model_names[f]: (model_spec(families[f]), width) for f in ("lstm", "convlstm", "rescnn")}
    if cnn_width is not None:
        specs[model_names["matched"]] = (model_spec(families["rescnn"]), cnn_width)
    rows = []
    for name, (spec, w) in specs.items():
        m = build_model(width=w, n_classes=k, **spec)
        rows.append({"model": name, "width": w, "parameters": m.n_params,
                     f"MFLOPs per {crop_s:g} s crop": flops_per_sample(m, length) / 1e6})
    return pd.DataFrame(rows)


def controls_text(control: pd.Series, matched: pd.Series, control_s, cnn_width) -> str:
    return (f"Shuffled-segment control: what order beyond {control_s:g} s is worth to the hybrid minus what it is "
            f"worth to the CNN (each trained and tested on intact versus shuffled segments, challenge F1, paired by "
            f"seed): {fmt_ci(control['mean'], control['low'], control['high'])}. A value near zero means the task "
            f"rewards the hybrid's sense of order no more than the CNN's. Matched compute: the hybrid minus the residual "
            f"CNN of width {cnn_width:g}, challenge F1: {fmt_ci(matched['mean'], matched['low'], matched['high'])}.")


# ---- the verdict ----

def c12(runs: pd.DataFrame, train_speed: pd.DataFrame, o: dict, best: dict, model_names: dict, pool,
        control: pd.Series | None = None, matched: pd.Series | None = None, remedy: dict | None = None) -> Verdict:
    """C12 = all_of(speed, order, accuracy), at the longest crop:
    speed: log training speed-up of the hybrid over the LSTM (paired by seed) above zero beyond the margin, and the
      hybrid's log speed closer to the CNN's than to the LSTM's (log speed-up minus half the CNN's, paired by seed);
    order: the hybrid's macro-F1 drop under shuffling of the longest segments minus the deep CNN's, above zero; and,
      where the shuffled-segment control ran, order pays: training on shuffled segments costs the hybrid more
      challenge F1 than it costs the CNN;
    accuracy: the best hybrid (validation) minus the LSTM at the same crop, test challenge F1, above zero; and, where
      the matched-compute CNN ran, the hybrid not worse than it by more than the margin. Accuracy reads usable runs
      only: an LSTM that failed to train at every crop while the hybrid trained supports the claim as a finding
      (it is never averaged in as a score); speed reads every finished run (a step costs the same either way).
      A hybrid found worse than the matched CNN is refuted only if the standard remedy (`remedy`, remedy_effect: the
      hybrid and a full-width CNN with the longer budget) does not undo it: if, under the remedy, the hybrid is not
      clearly worse than even that larger CNN, the recipe understated the hybrid and the part is inconclusive."""
    longest = runs["crop_s"].max()
    length = runs[runs["model"].isin([model_names[f] for f in ("lstm", "convlstm", "rescnn")])
                  & (runs["crop_s"] == longest)]
    logs = length.assign(log_sps=np.log(length["train_samples_per_s"])).pivot_table(
        index="seed", columns="family", values="log_sps")
    get = lambda f: logs[f] if f in logs else pd.Series(dtype=float)
    faster = get("convlstm") - get("lstm")
    toward_cnn = faster - (get("rescnn") - get("lstm")) / 2
    b = best.get("convlstm")
    acc = pd.Series({"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0})
    if b is not None:
        pair = usable(runs[(runs["crop_s"] == b["crop_s"]) & runs["model"].isin([b["model"], model_names["lstm"]])])
        acc = stats.paired_diff(pair, "family", "test_score", "convlstm", "lstm", missing="nan").iloc[0]
    d = o["hyb_vs_cnn"]
    m = lambda q: margin("C12", q)
    speed = all_of({
        "faster than the LSTM": judge(*stats.estimate(faster), m("log_speedup"), what="log training speed-up, hybrid / LSTM"),
        "closer to the CNN's speed": judge(*stats.estimate(toward_cnn), m("log_speedup"),
                                           what="log speed-up over the LSTM minus half the CNN's")})
    order = {"shuffled test segments": judge(d["mean"], d["low"], d["high"], int(d["n"]), m("drop"),
                                             what=f"shuffle drop at {o['big']:g} s, hybrid - deep CNN")}
    if control is not None:
        order["order pays"] = judge(control["mean"], control["low"], control["high"], int(control["n"]), m("drop"),
                                    what="loss from shuffled-segment training, hybrid - CNN")
    lstm_tried = runs[runs["model"] == model_names["lstm"]]
    lstm_failed = b is not None and len(lstm_tried) > 0 and not is_usable(lstm_tried).any()
    if lstm_failed:
        better = Judgement("supported", f"the LSTM failed to train at every crop ({len(lstm_tried)} runs: "
                                        f"{int(lstm_tried['collapsed'].sum())} collapsed, "
                                        f"{int((~lstm_tried['converged'].astype(bool)).sum())} unconverged) while "
                                        "the hybrid trained", math.nan, math.nan, math.nan, m("test_score").value, 0)
    else:
        better = judge(acc["mean"], acc["low"], acc["high"], int(acc["n"]), m("test_score"),
                       what="test challenge F1, best hybrid - LSTM")
    accuracy = {"better than the LSTM": better}
    if matched is not None:
        vs_cnn = not_worse(matched["mean"], matched["low"], matched["high"], int(matched["n"]), m("test_score"),
                           what="test challenge F1, hybrid - CNN at matched compute")
        if vs_cnn.verdict == "refuted" and remedy is not None:
            d = remedy["diff"]
            again = not_worse(d["mean"], d["low"], d["high"], int(d["n"]), m("test_score"),
                              what="test challenge F1 under the remedy, hybrid - full-width CNN")
            if again.verdict != "refuted":
                vs_cnn = Judgement("inconclusive", f"{vs_cnn.reason}; but the standard remedy does not confirm "
                                                   f"the gap ({again.reason}), so the recipe may have understated "
                                                   f"the hybrid",
                                   vs_cnn.mean, vs_cnn.low, vs_cnn.high, vs_cnn.margin, vs_cnn.n)
        accuracy["not worse than the CNN at matched compute"] = vs_cnn
    j = all_of({"speed": speed, "order": all_of(order), "accuracy": all_of(accuracy)})
    tr = train_speed[train_speed["crop_s"] == longest].set_index("family")
    ratio = lambda f: fmt_ci(*tr.loc[f, ["mean", "low", "high"]], 2) if f in tr.index else "n/a"
    if lstm_failed:
        versus_lstm = f"the LSTM failed to train at every crop, the best hybrid ({b['model']}) trained"
    else:
        versus_lstm = (f"best hybrid ({b['model'] if b is not None else 'none'}) minus LSTM, test challenge F1 "
                       f"{fmt_ci(acc['mean'], acc['low'], acc['high'])}")
    versus_cnn = ("" if matched is None else f"; hybrid minus the residual CNN at matched compute "
                  f"{fmt_ci(matched['mean'], matched['low'], matched['high'])}")
    if matched is not None and remedy is not None:
        d = remedy["diff"]
        versus_cnn += (f"; with the longer budget, hybrid minus the full-width CNN {fmt_ci(d['mean'], d['low'], d['high'])}"
                       f" ({int(d['n'])} pairs)")
    summary = (f"Speed: at {longest:g} s the hybrid (pool {pool}) trains {ratio('convlstm')}× as fast as the LSTM, the "
               f"residual CNN {ratio('rescnn')}×. Order: shuffling {o['big']:g} s segments costs the hybrid "
               f"{drop_of(o, model_names['convlstm'])} macro-F1, the deep CNN {drop_of(o, model_names['rescnn'])}, the "
               f"LSTM {drop_of(o, model_names['lstm'])}. Accuracy: {versus_lstm}{versus_cnn}.")
    return Verdict.of(j, claim="C12", chapter="hybrids", summary=summary, figure="fig-hybrids-throughput",
                      runs=sorted(runs["key"]),
                      effect=f"log training speed-up of the hybrid over the LSTM at {longest:g} s crops "
                             f"(log 2 = 0.69)")
