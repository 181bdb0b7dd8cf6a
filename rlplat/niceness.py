"""Ray starts its workers at nice 15 unless the node was started with
RAY_worker_niceness=0: right for batch work, not for a process the run waits on (a serving
replica, a Ray-placed learner). Such a process takes its starter's priority back."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def take_priority(niceness: int, what: str) -> None:
    """Run at `niceness` (the starting command's) if this process is nicer; raising one's
    priority may need privileges: without them, one warning line naming `what`."""
    if os.nice(0) <= niceness:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    except OSError:
        log.warning(
            "%s runs at nice %d (Ray's worker niceness): start the Ray nodes with "
            "RAY_worker_niceness=0 for normal priority", what, os.nice(0),
        )  # fmt: skip
