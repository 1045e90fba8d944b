"""Progress where there is no terminal: periodic plain lines a log file keeps."""

from qvision.cli import progress_lines


def test_progress_lines_are_periodic_and_end_with_the_last_step():
    now = [0.0]
    lines: list[str] = []
    cb = progress_lines("calibrating", lines.append, every=30, clock=lambda: now[0])
    for i in range(1, 101):
        now[0] = i * 1.0  # one second per image
        cb(i, 100)
    assert lines == [
        "calibrating: 30/100 (30 s)",
        "calibrating: 60/100 (60 s)",
        "calibrating: 90/100 (90 s)",
        "calibrating: 100/100 (100 s)",
    ]


def test_short_phases_and_unknown_totals():
    now = [0.0]
    lines: list[str] = []
    cb = progress_lines("evaluating", lines.append, every=30, clock=lambda: now[0])
    now[0] = 5.0
    cb(10, 10)  # done in 5 s: nothing to report
    assert lines == []
    cb = progress_lines("adaround", lines.append, every=30, clock=lambda: now[0])
    now[0] = 40.0
    cb(3, None)
    assert lines == ["adaround: 3 (35 s)"]
