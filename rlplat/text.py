"""How returns are printed, in every command alike."""

from __future__ import annotations

import math

HEARTBEAT_S = 30.0  # seconds between plain progress lines (a run, a long eval)


def shown(x: float) -> str:
    """One decimal, but two significant digits between 0.1 and 1 (a return of 0.93 is not
    0.9); never `-0.0` (a mean of -0.01 is no negative return worth a sign); a dash for NaN
    (no value yet, e.g. before the first eval)."""
    if math.isnan(x):
        return "—"
    text = f"{x:.2g}" if 0.1 <= abs(x) < 1 else f"{x:.1f}"
    return "0.0" if text == "-0.0" else text
