"""Child process for peak-RSS measurement: ``python -m qvision.runtime.rss '{json}'``."""

from __future__ import annotations

import json
import resource
import sys

from qvision.runtime.inputs import random_feeds
from qvision.runtime.session import make_session


def main() -> None:
    cfg = json.loads(sys.argv[1])
    sess = make_session(cfg["path"], cfg["threads"])
    hw = tuple(cfg["hw"]) if cfg["hw"] else None
    feed = random_feeds(sess, cfg["batch"], hw, cfg["path"])
    for _ in range(3):
        sess.run(None, feed)
    print(_peak_rss_bytes())


def _peak_rss_bytes() -> int:
    # VmHWM belongs to this process image; ru_maxrss survives exec and can report the
    # parent's peak, since the child started as its copy.
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


if __name__ == "__main__":
    main()
