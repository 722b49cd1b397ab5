"""The package's one training loop (entclust/_loop.py, issue 27) and its progress reports (issue 28,
item 3): what every trainer (the linear estimator, the deep trainer, SPC) relies on."""
import ast
import pathlib

import pytest
import torch

import entclust
from entclust import _loop
from entclust._loop import EpochLoop, Progress, near_equal_batches

ROOT = pathlib.Path(entclust.__file__).parent


def test_the_package_has_one_training_loop():
    """No module but _loop.py steps an optimiser or calls backward (docstring examples aside)."""
    found = []
    for path in ROOT.rglob("*.py"):
        if path.name == "_loop.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("backward", "step"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def quadratic(total=10, batch_size=3, **kwargs):
    """Two independent problems ``(w_b - b)^2`` trained side by side."""
    w = torch.nn.Parameter(torch.zeros(2))
    loop = EpochLoop("toy", torch.optim.SGD([w], lr=0.1), total, batch_size=batch_size, **kwargs)
    return w, loop, lambda idx: (w - torch.tensor([1.0, 2.0])).pow(2)


def test_each_problem_gets_its_own_gradient_and_the_record_is_the_epoch_mean():
    w, loop, step = quadratic()
    history = loop.run(step, 1, torch.Generator().manual_seed(0), end_epoch=lambda e, t, s: {"totals": t})
    # 3 batches (round(10 / 3)): w_b moves towards b on its own; records weighted by rows / total
    expected = torch.tensor([1.0, 2.0]) * (1 - 0.8 ** 3)
    torch.testing.assert_close(w.detach(), expected)
    first = torch.tensor([1.0, 4.0]).double()
    assert history[0]["totals"].shape == (2,) and bool((history[0]["totals"] < first).all())


def test_batches_are_near_equal_and_cover_every_row_once():
    batches = list(near_equal_batches(11, 4, "cpu")(torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [4, 4, 3]
    assert sorted(torch.cat(batches).tolist()) == list(range(11))


def test_a_loss_that_stops_being_finite_is_an_error_naming_the_epoch_and_the_hint():
    w = torch.nn.Parameter(torch.ones(1))
    loop = EpochLoop("Trainer('rce')", torch.optim.SGD([w], lr=1.0), 4, batch_size=2, hint="lower lr (now 1)")
    calls = []

    def step(idx):
        calls.append(1)
        return w.sum() * (float("nan") if len(calls) == 3 else 1.0)

    with pytest.raises(FloatingPointError, match=r"Trainer\('rce'\): the loss became nan in epoch 2; lower lr \(now 1\)"):
        loop.run(step, 5, torch.Generator().manual_seed(0))


def test_checkpoints_every_k_epochs_and_after_the_last_and_resume_continues():
    saved = []
    w, loop, step = quadratic(checkpoint=saved.append, checkpoint_every=2)
    history = loop.run(step, 5, torch.Generator().manual_seed(0))
    assert saved == [2, 4, 5] and [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    saved.clear()
    history = loop.run(step, 5, torch.Generator(), start=3, history=[{"epoch": 1}])
    assert saved == [4, 5] and [h["epoch"] for h in history] == [1, 4, 5]


def test_progress_in_a_log_is_a_line_first_last_and_every_few_seconds(capsys, monkeypatch):
    monkeypatch.setattr(_loop, "_is_terminal", lambda: False)
    w, loop, step = quadratic(verbose=True)
    loop.run(step, 50, torch.Generator().manual_seed(0), desc="toy fit")
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("toy fit: epoch 1/50, loss=") and lines[0].endswith(" s")
    assert lines[-1].startswith("toy fit: epoch 50/50, loss=")
    assert len(lines) <= 4  # fast epochs: first and last (and one per LINE_EVERY seconds)
    # a stage that stops early still reports where it stopped
    progress = Progress("rounds", 30, verbose=True, unit="round")
    for changed in (0.5, 0.1, 0.01):
        progress.update(0.0, changed=changed)
    progress.close()
    assert capsys.readouterr().err.strip().splitlines() == [
        "rounds: round 1/30, changed=0.5, 0.00 s", "rounds: round 3/30, changed=0.01, 0.00 s"]


def test_a_long_epoch_says_which_batch_it_is_at(capsys, monkeypatch):
    """One pass over 10^6 points is the default schedule there: its batches are said within it,
    at most one line every LINE_EVERY seconds (here every batch's check passes)."""
    monkeypatch.setattr(_loop, "_is_terminal", lambda: False)
    monkeypatch.setattr(_loop, "LINE_EVERY", -1.0)
    w, loop, step = quadratic(total=10, batch_size=3, verbose=True)
    loop.run(step, 1, torch.Generator().manual_seed(0), desc="toy fit")
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[:2] == ["toy fit: epoch 1/1, batch 1/3", "toy fit: epoch 1/1, batch 2/3"]
    assert lines[2].startswith("toy fit: epoch 1/1, loss=") and len(lines) == 3


def test_a_throttled_note_waits_after_a_steps_line(capsys, monkeypatch):
    """In a log, how far a step has come is not said just after the last step's line (an epoch's
    first batches came right after the line of the epoch before)."""
    monkeypatch.setattr(_loop, "_is_terminal", lambda: False)
    progress = Progress("fit", 5, verbose=True)
    monkeypatch.setattr(progress, "noted", progress.noted - 10 * _loop.LINE_EVERY)  # the last note long ago
    progress.update(1.0)  # the first step's line, printed now
    progress.note("epoch 2/5, batch 1/400", throttle=True)
    progress.close()
    assert capsys.readouterr().err.strip().splitlines() == ["fit: epoch 1/5, 1.00 s"]


def test_progress_is_silent_without_verbose(capsys):
    w, loop, step = quadratic()
    loop.run(step, 3, torch.Generator().manual_seed(0))
    assert capsys.readouterr() == ("", "")


def test_the_estimators_report_progress_in_a_log_within_their_first_steps(capsys, monkeypatch):
    """verbose follows scikit-learn: something is printed, also where stderr is not a terminal."""
    import numpy as np

    monkeypatch.setattr(_loop, "_is_terminal", lambda: False)
    x = np.random.default_rng(0).normal(size=(60, 3))
    entclust.EntropyClustering(3, epochs=2, n_init=2, verbose=True, random_state=0).fit(x)
    err = capsys.readouterr().err
    assert "EntropyClustering(rce, 2 restarts): epoch 1/2, loss=" in err
    assert "EntropyClustering(rce, 2 restarts): epoch 2/2, loss=" in err


def test_the_large_k_start_says_it_is_seeding_before_the_seeds_are_drawn(capsys, monkeypatch):
    """The k-means++ seeding takes seconds at K = 10 000: its line comes first."""
    import numpy as np

    monkeypatch.setattr(_loop, "_is_terminal", lambda: False)
    x = np.random.default_rng(0).normal(size=(3000, 8)).astype(np.float32)
    entclust.EntropyClustering(300, verbose=True, random_state=0).fit(x)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "EntropyClustering: self-labeled centroids (K=300): k-means++ seeds from 3000 points"
    assert lines[1].startswith("EntropyClustering: self-labeled centroids (K=300): round 1/")


def test_long_stages_of_the_large_k_fit_report_how_far_they_are(capsys, monkeypatch):
    """At K = 10^5 the seeding and every round take a minute, and at N = 10^7 the final labels:
    each says how far it is (here with every throttle at 0 and calls of 40 seeds)."""
    import numpy as np

    from entclust.cluster import centroids, estimator

    monkeypatch.setattr(_loop, "_is_terminal", lambda: False)
    monkeypatch.setattr(_loop, "LINE_EVERY", 0.0)
    monkeypatch.setattr(centroids, "KPP_CALL_WORK", 3000 * 8 * 7 * 40)  # 40 seeds a call (7 trials at K = 300)
    monkeypatch.setattr(estimator, "PASS_PROGRESS", 0)
    x = np.random.default_rng(0).normal(size=(3000, 8)).astype(np.float32)
    entclust.EntropyClustering(300, verbose=True, random_state=0).fit(x)
    lines = capsys.readouterr().err.strip().splitlines()
    start = "EntropyClustering: self-labeled centroids (K=300): "
    assert lines[1:8] == [f"{start}k-means++ seeds {done}/300" for done in range(41, 300, 40)]
    assert lines[8] == f"{start}round 1: 3000/3000 points" and lines[9].startswith(f"{start}round 1/")
    assert lines[-1] == "EntropyClustering: labels and objective (K=300): points 3000/3000"


def test_progress_counts_steps_of_any_size_and_throttles_notes(capsys, monkeypatch):
    monkeypatch.setattr(_loop, "_is_terminal", lambda: False)
    progress = Progress("pass", 1000, verbose=True, unit="point")
    progress.note("just started", throttle=True)  # within LINE_EVERY of the start: not said
    for _ in range(4):
        progress.update(steps=250)
    progress.close()
    assert capsys.readouterr().err.strip().splitlines() == ["pass: point 250/1000", "pass: point 1000/1000"]
