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


def test_long_algorithms_report_their_steps_through_quantize(tmp_path, tiny_model, flat_dir):
    """AdaRound names itself in the progress it reports; a two-argument callback (the API's
    documented form) still works."""
    from qvision import api
    from qvision.quant.algorithms.context import with_step_names

    steps: list[tuple] = []
    api.quantize(
        tiny_model,
        tmp_path / "q.onnx",
        flat_dir,
        algos="adaround",
        algo_options={"adaround": {"iters": 20}},
        progress=lambda done, total, what=None: steps.append((done, total, what)),
    )
    named = [s for s in steps if s[2] == "adaround"]
    assert named and named[-1][1] == 2 and [s[0] for s in named] == [0, 1]
    two: list[tuple] = []
    with_step_names(lambda d, t: two.append((d, t)))(1, 2, "brecq")
    assert two == [(1, 2)]
