"""The features chapter's analysis that decides a verdict through ecglib.verdicts: C11 (what gates buy)."""
from __future__ import annotations

import pandas as pd

from ..verdicts import Judgement, combine, judge, margin


def c11(gates: pd.DataFrame) -> Judgement:
    """Gated CNN minus plain CNN at matched depth and parameters, per task (claimed above zero), combined over
    tasks. gates: rows with data, comparison ("conv: ..."), mean, low, high, n. The sign of a mean alone never
    refutes: the CI must lie inside the no-effect band or below zero."""
    conv = gates[gates["comparison"].str.startswith("conv")]
    return combine({r["data"]: judge(r["mean"], r["low"], r["high"], int(r["n"]), margin("C11", "score"),
                                     what="gated - plain CNN") for _, r in conv.iterrows()},
                   headline=conv["data"].iloc[-1] if len(conv) else None)
