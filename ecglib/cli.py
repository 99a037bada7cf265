"""Command line: `python -m ecglib fetch | data summary | bench | build | plan | verify | runs`.

Each subcommand imports its module lazily so that `--help` and `fetch` stay fast
and do not import torch.
"""
from __future__ import annotations

import argparse
import json
import sys


def _fetch(args) -> int:
    from ecglib import data

    names = ["mitdb", "cinc2017"] if args.name == "all" else [args.name]
    for name in names:
        path = data.fetch(name, verify=args.verify)
        print(f"{name}: {'every file re-hashed and ' if args.verify else ''}ready in {path}")
    return 0


def _data_summary(args) -> int:
    from ecglib import data

    s = data.summary()
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        print(data.format_summary(s))
    return 0


def _bench(args) -> int:
    from ecglib import bench

    return bench.main(args)


def _build(args) -> int:
    from ecglib import book

    overrides = {name: value for name, value in (args.param or [])}
    book.build(
        profile=args.profile,
        chapters=args.chapter or None,
        overrides=overrides,
        executor=args.executor,
        fresh=args.fresh,
        render=not args.no_render,
        dry_run=args.dry_run,
        store_only=args.store_only,
    )
    return 0


def _plan(args) -> int:
    from ecglib import plan

    plan.plan(profile=args.profile, chapters=args.chapter or None,
              overrides={name: value for name, value in (args.param or [])}, detail=args.detail, out=args.out)
    return 0


def _runs(args) -> int:
    from ecglib import experiments

    df = experiments.list_runs()
    # Which store answered matters (the project's, or ECGLIB_RESULTS): say it, on stderr under --json.
    print(experiments.describe_store(), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(df.to_json(orient="records", indent=2))
    else:
        print(df.to_string(index=False) if len(df) else "no stored runs")
    return 0


def _verify(args) -> int:
    from ecglib import experiments, versions

    print(experiments.describe_store())
    print(f"today's training code: {versions.code_version()}")
    if args.list:
        runs = experiments.load_runs()
        table = runs.assign(certified_as=versions.canonical(runs["code"]).to_numpy()).groupby(
            ["code", "certified_as"], dropna=False).size().rename("runs").reset_index()
        print(table.to_string(index=False) if len(table) else "no stored runs")
        return 0
    df = versions.verify(args.runs)
    if df.empty:
        print("every stored run is of today's training code (or certified equivalent): nothing to verify")
        return 0
    print(df.to_string(index=False))
    bad = sorted(df.loc[~df["same"], "code"].unique())
    certified = sorted(set(df["code"]) - set(bad))
    if certified:
        print(f"certified equivalent to today's code: {', '.join(certified)} (in {versions.EQUIVALENCE_FILE})")
    if bad:
        print(f"trained differently: {', '.join(bad)}; their runs stay flagged (re-run them with --fresh)")
    return 1 if bad else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ecglib", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fetch", help="download (or copy from ECGLIB_MIRROR) and verify a database")
    f.add_argument("name", nargs="?", default="all", choices=["mitdb", "cinc2017", "all"])
    f.add_argument("--verify", action="store_true",
                   help="re-hash every file against SHA256SUMS.txt, even if its size and mtime are unchanged")
    f.set_defaults(func=_fetch)

    d = sub.add_parser("data", help="data utilities")
    dsub = d.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("summary", help="records and class counts per split")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_data_summary)

    b = sub.add_parser("bench", help="samples/s of the training loop against a bare PyTorch loop")
    b.add_argument("--json", action="store_true")
    b.add_argument("--device", default=None, help="cuda, mps or cpu (default: auto)")
    b.add_argument("--steps", type=int, default=None, help="timed steps per measurement")
    b.add_argument("--repeats", type=int, default=None,
                   help="interleaved loop/bare pairs per model (the median ratio is reported, with its range)")
    b.add_argument("--seq-len", type=int, default=None, help="input length in samples (default 1000)")
    b.set_defaults(func=_bench)

    bu = sub.add_parser("build", help="execute chapters with papermill, then render the book")
    bu.add_argument("--profile", default="default", help="a profile in params/ (smoke, default, full)")
    bu.add_argument("--chapter", action="append", help="only these chapters (repeatable)")
    bu.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                    help="override a chapter parameter (YAML value), e.g. -p seeds 5")
    bu.add_argument("--executor", default=None, choices=["local", "process", "ray"])
    bu.add_argument("--fresh", action="store_true", help="retrain even runs already in the store")
    bu.add_argument("--store-only", action="store_true",
                    help="render from the results store, training nothing: a chapter that needs a missing run fails")
    bu.add_argument("--no-render", action="store_true", help="execute chapters only")
    bu.add_argument("--dry-run", action="store_true",
                    help="validate, print which chapters would execute with which parameters, and stop")
    bu.set_defaults(func=_build)

    pl = sub.add_parser("plan", help="count the runs a profile's chapters would train that the store lacks, and "
                                     "price them in CPU-hours from the store's own timings; trains nothing",
                        description="Executes the chapters as build does, training nothing: every sweep lists the "
                                    "runs the store lacks and goes on with placeholders. Prices each from stored runs "
                                    "of the same family and data settings (seconds per epoch, linear in depth, x "
                                    "epochs + fixed cost); 'rough' where the store has none. See ecglib/plan.py.")
    pl.add_argument("--profile", default="default", help="a profile in params/ (smoke, default, full)")
    pl.add_argument("--chapter", action="append", help="only these chapters (repeatable)")
    pl.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                    help="override a chapter parameter (YAML value), e.g. -p seeds 5")
    pl.add_argument("--detail", action="store_true", help="also the runs and CPU-hours per chapter, family and depth")
    pl.add_argument("--out", default=None, help="also write the table as CSV here (with --detail: <out>-detail.csv)")
    pl.set_defaults(func=_plan)

    v = sub.add_parser("verify", help="retrain a few stored runs of older training code; certify it if nothing changed")
    v.add_argument("--runs", type=int, default=2, help="runs retrained per older code version (cheap ones, one per dataset and family first)")
    v.add_argument("--list", action="store_true", help="only list the stored runs' code versions; retrain nothing")
    v.set_defaults(func=_verify)

    r = sub.add_parser("runs", help="list stored runs with their metrics")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_runs)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        # Bad input and missing data get one clear line (exit 2); a chapter that fails gets its
        # cell and traceback tail (exit 1); anything else is a bug and keeps its full traceback.
        kind = type(e).__name__
        if kind == "ChapterError":
            print(f"error: {e}", file=sys.stderr)
            return 1
        if isinstance(e, RuntimeError) and kind not in ("DataError", "StoreError"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
