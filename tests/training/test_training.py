"""The stacked trainer against the sequential nn.Module loop, masking, stopping, metrics, rebuild."""

import io
import multiprocessing
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from taskscout import models
from taskscout.data import Head
from taskscout.errors import DataError, SpecError
from taskscout.models import grouped_bmm
from taskscout.spec import ModelSettings, TrainingSettings
from taskscout.training import (
    ModelPlan,
    evaluate_model,
    head_metric,
    head_row_loss,
    model_from_result,
    predict,
    train_models,
    train_sequential,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


HEADS = [
    Head("b", "binary"),
    Head("m", "multiclass", 3),
    Head("o", "ordinal", 4),
    Head("r", "regression", scale=2.0),
    Head("s", "soft", 3),
    Head("adv", "binary", adversarial=True),
]
MODEL = ModelSettings(depth=2, width=8)


def make_data(n=160, d=5, seed=0):
    """Targets planted on the inputs, 30% of the binary labels missing, soft labels from a softmax."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = np.full((n, 8), np.nan)
    Y[:, 0] = X[:, 0] > 0
    Y[:, 1] = np.digitize(X[:, 1], [-0.5, 0.5])
    Y[:, 2] = np.digitize(X[:, 2], [-1, 0, 1])
    Y[:, 3] = X[:, 3] + 0.1 * rng.normal(size=n)
    p = np.exp(X[:, :3])
    Y[:, 4:7] = p / p.sum(1, keepdims=True)
    Y[:, 7] = X[:, 4] > 0
    Y[rng.random(n) < 0.3, 0] = np.nan
    split = rng.choice([0, 1, 2], size=n, p=[0.6, 0.2, 0.2]).astype(np.int8)
    return X, Y, split


PLANS = [
    ModelPlan((0, 1, 2, 3, 4, 5), (0,), seed=1, branch_layer=1, key="all"),
    ModelPlan((3,), (3,), seed=2, branch_layer=1),
    ModelPlan((1, 4), (1,), seed=3, branch_layer=1, dropped_features=(0, 2), loss_weights=(1.0, 0.5)),
    ModelPlan((0, 5), (0,), seed=4, branch_layer=2),
    ModelPlan((0, 2), (2,), seed=5, branch_layer=0),
]


def settings(**kw):
    return TrainingSettings(**{"epochs": 5, "batch_size": 32, "patience": 2, "min_epochs": 0, **kw})


def assert_same(a, b, tol):
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert ra.plan == rb.plan
        assert (ra.best_epoch, ra.epochs_run) == (rb.best_epoch, rb.epochs_run)
        for split in ra.loss:
            assert ra.loss[split].keys() == set(ra.plan.targets)
            for t, v in ra.loss[split].items():
                assert abs(v - rb.loss[split][t]) <= tol, (ra.plan, split, t, v, rb.loss[split][t])
        assert np.allclose(ra.curves["loss"], rb.curves["loss"], atol=tol, equal_nan=True)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-9), (torch.float32, 1e-4)])
@pytest.mark.parametrize("weighting", ["equal", "uncertainty"])
def test_stacked_equals_sequential(dtype, tol, weighting):
    X, Y, split = make_data()
    kw = {"model": MODEL, "training": settings(weighting=weighting), "device": "cpu", "dtype": dtype,
          "eval_splits": ("val", "test")}
    assert_same(train_models(X, Y, HEADS, split, PLANS, **kw), train_sequential(X, Y, HEADS, split, PLANS, **kw), tol)


def test_result_does_not_depend_on_stack_mates():
    X, Y, split = make_data()
    kw = {"model": MODEL, "training": settings(), "device": "cpu", "dtype": torch.float64}
    together = train_models(X, Y, HEADS, split, PLANS, parallel_stacks=1, **kw)
    alone = [train_models(X, Y, HEADS, split, [p], **kw)[0] for p in PLANS]
    small_stacks = train_models(X, Y, HEADS, split, PLANS, stack_size=2, **kw)
    assert_same(together, alone, 1e-12)
    assert_same(together, small_stacks, 1e-12)
    assert [r.plan.key for r in together][0] == "all"


# Models sharing a seed share their batches (one gather, one first-layer input per seed): given
# out of seed order, at every branch layer, with dropped inputs, loss weights and an adversary.
SHARED_SEED_PLANS = [
    ModelPlan((0, 1, 2, 3, 4, 5), (0,), seed=7, branch_layer=1, key="a"),
    ModelPlan((0, 5), (0,), seed=8, branch_layer=1),
    ModelPlan((3,), (3,), seed=7, branch_layer=1),
    ModelPlan((1, 4), (1,), seed=7, branch_layer=1, dropped_features=(0, 2), loss_weights=(1.0, 0.5)),
    ModelPlan((2,), (2,), seed=8, branch_layer=1),
    ModelPlan((0, 2), (2,), seed=7, branch_layer=0, dropped_features=(1,)),
    ModelPlan((3, 4), (3,), seed=8, branch_layer=0),
    ModelPlan((1,), (1,), seed=7, branch_layer=0),
    ModelPlan((0, 1), (0,), seed=7, branch_layer=2),
    ModelPlan((4,), (4,), seed=9, branch_layer=2),
    ModelPlan((2, 3), (2,), seed=7, branch_layer=2),
]


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_models_sharing_a_seed_train_as_they_would_alone(dtype, tol, monkeypatch):
    X, Y, split = make_data()
    kw = {"model": MODEL, "training": settings(), "device": "cpu", "dtype": dtype, "eval_splits": ("val", "test")}
    groups = []

    def spy(a, b, sizes, bias=None):
        groups.append((len(sizes), b.shape[0]))
        return grouped_bmm(a, b, sizes, bias)

    monkeypatch.setattr(models, "grouped_bmm", spy)
    stacked = train_models(X, Y, HEADS, split, SHARED_SEED_PLANS, parallel_stacks=1, **kw)
    # The training steps of the three stacks (branch layers 0, 1, 2) ran on their seed groups.
    assert {(2, 3), (2, 5)} <= set(groups)
    monkeypatch.undo()
    assert [r.plan for r in stacked] == SHARED_SEED_PLANS  # plan order, though stacks run in seed order
    assert_same(stacked, train_sequential(X, Y, HEADS, split, SHARED_SEED_PLANS, **kw), tol)
    if dtype == torch.float64:
        alone = [train_models(X, Y, HEADS, split, [p], **kw)[0] for p in SHARED_SEED_PLANS]
        assert_same(stacked, alone, 1e-12)
        # Stacks of two mix seeds and split groups differently.
        assert_same(stacked, train_models(X, Y, HEADS, split, SHARED_SEED_PLANS, stack_size=2, **kw), 1e-12)


def test_a_seed_group_keeps_sharing_batches_after_some_of_it_stops():
    # Patience 1 with min_epochs 0 stops models at different epochs: the live stack's groups
    # shrink and must still line up with their models.
    X, Y, split = make_data()
    kw = {"model": MODEL, "training": settings(patience=1, epochs=8, lr=0.05), "device": "cpu",
          "dtype": torch.float64}
    stacked = train_models(X, Y, HEADS, split, SHARED_SEED_PLANS, parallel_stacks=1, **kw)
    assert len({r.epochs_run for r in stacked}) > 1
    assert_same(stacked, train_sequential(X, Y, HEADS, split, SHARED_SEED_PLANS, **kw), 1e-9)

def test_parallel_stacks_change_nothing_but_the_schedule():
    X, Y, split = make_data()
    kw = {"model": MODEL, "training": settings(), "device": "cpu", "dtype": torch.float64}
    done: list[int] = []
    threads = torch.get_num_threads()
    one = train_models(X, Y, HEADS, split, PLANS, parallel_stacks=1, **kw)
    three = train_models(X, Y, HEADS, split, PLANS, parallel_stacks=3, progress=done.append, **kw)
    assert_same(one, three, 1e-12)
    assert sum(done) == len(PLANS)
    assert torch.get_num_threads() == threads  # the workers' one-thread setting does not leak
    with pytest.raises(SpecError, match="parallel_stacks must be an int >= 1"):
        train_models(X, Y, HEADS, split, PLANS, parallel_stacks=0, **kw)


def test_parallel_stacks_with_torch_optim_adam_train_as_one_stack(monkeypatch):
    # Where the fused kernel is missing (torch 2.3) the stacks use torch.optim.Adam, in forked
    # workers too (the caller loads its lazy imports once, before forking).
    from taskscout.training import optimiser, stacked

    monkeypatch.setattr(optimiser, "_fused_ok", lambda params: False)  # what _adam asks
    monkeypatch.setattr(stacked, "_fused_ok", lambda params: False)  # what train_models asks
    X, Y, split = make_data()
    kw = {"model": MODEL, "training": settings(), "device": "cpu", "dtype": torch.float64}
    one = train_models(X, Y, HEADS, split, PLANS, parallel_stacks=1, **kw)
    two = train_models(X, Y, HEADS, split, PLANS, parallel_stacks=2, **kw)
    assert_same(one, two, 1e-12)


def test_ctrl_c_stops_parallel_stacks_at_their_next_step():
    # Two stacks training on worker threads for many seconds; SIGINT (Ctrl-C) arrives after 0.5 s.
    X, Y, split = make_data(n=400)
    plans = [ModelPlan((0, 1), (0,), seed=k, branch_layer=1) for k in range(8)]
    finished: list[int] = []
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            train_models(X, Y, HEADS, split, plans, model=MODEL, device="cpu", parallel_stacks=2,
                         training=settings(epochs=400, patience=1000, batch_size=8), progress=finished.append)
    finally:
        timer.cancel()
    assert sum(finished) == 0  # no stack ran to its end: they stopped at the interrupt
    assert not [t for t in threading.enumerate() if t.name.startswith("taskscout-stack")]
    assert not multiprocessing.active_children()


def test_an_error_in_one_stack_stops_the_others_and_is_raised(monkeypatch):
    # One stack fails after 0.3 s; the other, set to train 400 epochs, stops at its next step.
    from taskscout.training import stacked

    real = stacked._train_stack

    def failing_first(data, heads, plans, plan_index, *args, **kw):
        if 0 in plan_index:
            time.sleep(0.3)
            raise ValueError("stack failed")
        return real(data, heads, plans, plan_index, *args, **kw)

    monkeypatch.setattr(stacked, "_train_stack", failing_first)
    X, Y, split = make_data(n=400)
    plans = [ModelPlan((0, 1), (0,), seed=k, branch_layer=1) for k in range(8)]
    finished: list[int] = []
    with pytest.raises(ValueError, match="stack failed"):
        train_models(X, Y, HEADS, split, plans, model=MODEL, device="cpu", parallel_stacks=2,
                     training=settings(epochs=400, patience=1000, batch_size=8), progress=finished.append)
    assert sum(finished) == 0  # the other stack did not run to its end
    assert not [t for t in threading.enumerate() if t.name.startswith("taskscout-stack")]
    assert not multiprocessing.active_children()


def test_model_seconds_add_up_to_the_calls_wall_time():
    # With two stacks at once each stack's time overlaps the other's; the models' shares of the
    # wall time add up to no more than the call took (summing stack times would count it twice).
    X, Y, split = make_data()
    plans = [ModelPlan((0, 1), (0,), seed=k, branch_layer=1) for k in range(6)]
    t = time.perf_counter()
    results = train_models(X, Y, HEADS, split, plans, model=MODEL, device="cpu", parallel_stacks=2,
                           training=settings(epochs=20, patience=1000))
    wall = time.perf_counter() - t
    assert all(r.seconds > 0 for r in results)
    assert sum(r.seconds for r in results) <= wall


def test_a_batch_without_labels_contributes_exactly_zero():
    X, Y, split = make_data()
    Y[:, 3] = np.nan
    Y[np.flatnonzero(split == 0)[:3], 3] = 1.0  # three labelled training rows: most batches have none
    Y[split == 1, 3] = 0.5
    plan = ModelPlan((0, 3), (0,), seed=7, branch_layer=1)
    kw = {"model": MODEL, "training": settings(), "device": "cpu", "dtype": torch.float64}
    (res,) = train_models(X, Y, HEADS, split, [plan], **kw)
    assert_same([res], train_sequential(X, Y, HEADS, split, [plan], **kw), 1e-9)
    assert np.isfinite(res.curves["loss"]).all()
    row, lab = head_row_loss(HEADS[3], torch.zeros(4, 1), torch.full((4, 1), float("nan")))
    assert row.tolist() == [0.0] * 4 and not lab.any()


def test_a_target_without_any_training_label_keeps_its_initial_head():
    X, Y, split = make_data()
    Y[split == 0, 3] = np.nan
    plan = ModelPlan((0, 3), (0,), seed=7, branch_layer=1)
    (res,) = train_models(X, Y, HEADS, split, [plan], model=MODEL, training=settings(), device="cpu",
                          dtype=torch.float64, keep_state=True)
    from taskscout.training import build_model

    init = build_model(plan, HEADS, in_features=5, model=MODEL, dtype=torch.float64).state_dict()
    assert torch.equal(res.state["heads.1.weight"], init["heads.1.weight"])  # zero gradient, every step
    assert torch.equal(res.state["towers.1.0.weight"], init["towers.1.0.weight"])
    assert not torch.equal(res.state["heads.0.weight"], init["heads.0.weight"])
    assert res.curves.query("task == 'r' and split == 'train'")["loss"].isna().all()


def test_a_model_without_a_target_is_unaffected_by_mates_training_it():
    X, Y, split = make_data()
    without = ModelPlan((0, 1), (0,), seed=3, branch_layer=1)
    mates = [ModelPlan((0, 1, 3), (3,), seed=3, branch_layer=1), ModelPlan((3, 4), (3,), seed=9, branch_layer=1)]
    kw = {"model": MODEL, "training": settings(), "device": "cpu", "dtype": torch.float64, "keep_state": True}
    stacked = train_models(X, Y, HEADS, split, [without, *mates], **kw)[0]
    alone = train_models(X, Y, HEADS, split, [without], **kw)[0]
    assert stacked.loss["val"].keys() == {0, 1}
    assert set(stacked.curves["task"]) == {"b", "m"}
    assert stacked.state.keys() == alone.state.keys()
    assert all(torch.allclose(stacked.state[k], alone.state[k], rtol=0, atol=1e-12) for k in alone.state)


def test_early_stopping_is_per_model_and_stopped_models_leave_the_stack():
    X, Y, split = make_data()
    plans = [ModelPlan((3, 0), (3,), seed=s, branch_layer=1) for s in range(4)]
    kw = {"model": MODEL, "training": settings(epochs=30, patience=3, lr=0.05, weighting="uncertainty"),
          "device": "cpu", "dtype": torch.float64}
    res = train_models(X, Y, HEADS, split, plans, **kw)
    for r in res:
        val = r.curves.query("split == 'val' and task == 'r'")["loss"].to_numpy()
        assert len(val) == r.epochs_run
        assert r.best_epoch == int(np.argmin(val)) + 1
        assert r.epochs_run == min(30, r.best_epoch + 3)
        assert abs(r.loss["val"][3] - val.min()) < 1e-9
    # models stopped at different epochs, so the stack shrank while the others went on;
    # their Adam moments and weighting parameters moved with them
    assert len({r.epochs_run for r in res}) > 1
    assert_same(res, train_sequential(X, Y, HEADS, split, plans, **kw), 1e-9)


@pytest.mark.parametrize("min_epochs", [0, 12, 50])
def test_patience_stops_a_model_only_after_min_epochs(min_epochs):
    X, Y, split = make_data()
    plans = [ModelPlan((3, 0), (3,), seed=s, branch_layer=1) for s in range(4)]
    kw = {"model": MODEL, "training": settings(epochs=30, patience=2, lr=0.05, min_epochs=min_epochs),
          "device": "cpu", "dtype": torch.float64}
    res = train_models(X, Y, HEADS, split, plans, **kw)
    for r in res:
        val = r.curves.query("split == 'val' and task == 'r'")["loss"].to_numpy()
        # the best epoch is still the lowest validation loss, wherever it falls
        assert r.best_epoch == int(np.argmin(val)) + 1
        assert r.epochs_run == min(30, max(min_epochs, r.best_epoch + 2))
    if min_epochs == 0:
        assert any(r.epochs_run < 12 for r in res)  # so the 12 below is the setting at work
    assert_same(res, train_sequential(X, Y, HEADS, split, plans, **kw), 1e-9)


def test_pruning_and_progress():
    X, Y, split = make_data()
    plans = [ModelPlan((0,), (0,), seed=s, branch_layer=1) for s in range(3)]
    seen, done = [], []

    def on_epoch(epoch, losses):
        seen.append(losses.copy())
        return np.array([False, epoch >= 2, False])

    res = train_models(X, Y, HEADS, split, plans, model=MODEL, training=settings(epochs=4, patience=10),
                       device="cpu", on_epoch=on_epoch, progress=done.append)
    assert [r.pruned for r in res] == [False, True, False]
    assert [r.epochs_run for r in res] == [4, 2, 4]
    assert np.isnan(seen[2][1]) and np.isfinite(seen[2][0])
    assert sum(done) == 3


def test_state_rebuilds_the_model_and_loads_with_weights_only():
    X, Y, split = make_data()
    plan = ModelPlan((0, 1, 2, 3, 4), (0,), seed=1, branch_layer=1, dropped_features=(2,))
    (res,) = train_models(X, Y, HEADS, split, [plan], model=MODEL, training=settings(), device="cpu",
                          eval_splits=("val", "test"), keep_state=True)
    buf = io.BytesIO()
    torch.save(res.state, buf)
    buf.seek(0)
    net = model_from_result(res, HEADS, model=MODEL, state=torch.load(buf, weights_only=True))
    test = split == 2
    loss, metric = evaluate_model(net, X[test], Y[test], HEADS)
    for t in plan.targets:
        assert abs(loss[t] - res.loss["test"][t]) < 1e-5
        assert abs(metric[t] - res.metric["test"][t]) < 1e-5
    pred = predict(net, X[test])
    assert pred[1].shape == (test.sum(), 3) and np.allclose(pred[1].sum(1), 1, atol=1e-5)
    assert ((pred[0] >= 0) & (pred[0] <= 1)).all()
    assert set(np.unique(pred[2])) <= {0, 1, 2, 3}


def test_metrics_known_answers():
    b = Head("b", "binary")
    # positives score 0.8, 0.4; negatives 0.4, 0.1: pairs won 1 + 1 + 0.5 (tie) + 1 of 4
    assert head_metric(b, np.array([[0.8], [0.4], [0.4], [0.1]]), np.array([[1], [1], [0], [0]])) == 0.875
    assert np.isnan(head_metric(b, np.array([[0.8], [0.1]]), np.array([[1], [1]])))
    o = Head("o", "ordinal", 4)
    z = np.array([[1, 1, -1], [-1, -1, -1], [1, 1, 1]])  # predictions 2, 0, 3
    assert head_metric(o, z, np.array([[2], [1], [3]])) == pytest.approx(2 / 3)
    r = Head("r", "regression", scale=2.0)
    assert head_metric(r, np.array([[0.0], [1.0]]), np.array([[1.0], [np.nan]])) == pytest.approx(2.0)


def test_learns_a_planted_binary_task():
    X, Y, split = make_data(n=400)
    (res,) = train_models(X, Y, HEADS, split, [ModelPlan((0,), (0,), seed=0, branch_layer=2)], model=MODEL,
                          training=settings(epochs=15, patience=5, lr=0.02), device="cpu")
    assert res.metric["val"][0] > 0.95


def test_an_empty_evaluation_split_gives_nan():
    X, Y, split = make_data()
    split = np.where(split == 2, 0, split).astype(np.int8)
    plan = ModelPlan((0, 3), (0,), seed=1, branch_layer=1)
    kw = {"model": MODEL, "training": settings(epochs=2), "device": "cpu", "eval_splits": ("val", "test")}
    for res in (train_models(X, Y, HEADS, split, [plan], **kw)[0], train_sequential(X, Y, HEADS, split, [plan], **kw)[0]):
        assert all(np.isnan(v) for v in res.loss["test"].values())
        assert all(np.isnan(v) for v in res.metric["test"].values())
        assert all(np.isfinite(v) for v in res.loss["val"].values())


def test_fused_adam_only_where_torch_has_it(monkeypatch):
    from taskscout.training.optimiser import _fused_ok

    cpu = [torch.zeros(3)]
    assert _fused_ok(cpu) and not _fused_ok([torch.zeros(3, dtype=torch.float16)])
    monkeypatch.setattr(torch, "__version__", "2.3.1+cpu")  # no CPU kernel before 2.4
    assert not _fused_ok(cpu)



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_direct_fused_adam_updates_exactly_as_torch_optim_adam(dtype):
    from taskscout.training.optimiser import _adam, _FusedAdam

    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(4, 3, 2, generator=gen, dtype=dtype), torch.randn(4, 1, 2, generator=gen, dtype=dtype)]
    grads = [[torch.randn(t.shape, generator=gen, dtype=dtype) for t in start] for _ in range(6)]
    training = settings(lr=0.01, weight_decay=0.1)
    ours = [t.clone() for t in start]
    opt = _adam(ours, training)
    assert isinstance(opt, _FusedAdam)
    ref = [t.clone().requires_grad_() for t in start]
    ref_opt = torch.optim.Adam(ref, lr=0.01, weight_decay=0.1, fused=True)
    for i, g in enumerate(grads):
        for o, r, gi in zip(ours, ref, g, strict=True):
            o.grad, r.grad = gi.clone(), gi.clone()
        if i == 2:  # a parameter without a gradient is left alone, as torch.optim does
            ours[1].grad = ref[1].grad = None
        opt.step()
        ref_opt.step()
        for o, r in zip(ours, ref, strict=True):
            assert torch.equal(o.detach(), r.detach())
    # Carried over to a cut-down stack (models 0 and 2), the moments and step count go along.
    keep = torch.tensor([0, 2])
    cut = [o.detach().index_select(0, keep) for o in ours]
    opt2 = _adam(cut, training, carry=(opt, ours, keep))
    ref_cut = [r.detach().index_select(0, keep).requires_grad_() for r in ref]
    ref_opt2 = torch.optim.Adam(ref_cut, lr=0.01, weight_decay=0.1, fused=True)
    for new_p, old_p in zip(ref_cut, ref, strict=True):
        st = ref_opt.state[old_p]
        ref_opt2.state[new_p] = {"step": st["step"].clone(), "exp_avg": st["exp_avg"].index_select(0, keep),
                                 "exp_avg_sq": st["exp_avg_sq"].index_select(0, keep)}
    for c, r, g in zip(cut, ref_cut, grads[0], strict=True):
        c.grad, r.grad = g.index_select(0, keep), g.index_select(0, keep)
    opt2.step()
    ref_opt2.step()
    for c, r in zip(cut, ref_cut, strict=True):
        assert torch.equal(c.detach(), r.detach())

def test_bad_inputs_are_clear_errors():
    X, Y, split = make_data()
    kw = {"model": MODEL, "training": settings(), "device": "cpu"}
    with pytest.raises(DataError, match=r"Y must have shape \(160, 8\)"):
        train_models(X, Y[:, :5], HEADS, split, PLANS, **kw)
    with pytest.raises(SpecError, match="main"):
        train_models(X, Y, HEADS, split, [ModelPlan((0,), (1,), seed=0, branch_layer=1)], **kw)
    with pytest.raises(SpecError, match="unknown loss weighting 'equl'"):
        train_models(X, Y, HEADS, split, PLANS, model=MODEL, training=settings(weighting="equl"), device="cpu")
    Y2 = Y.copy()
    Y2[0, 1] = 7
    with pytest.raises(DataError, match="class codes 0..2"):
        train_models(X, Y2, HEADS, split, PLANS, **kw)
    with pytest.raises(DataError, match="no validation rows"):
        train_models(X, Y, HEADS, np.where(split == 1, 0, split).astype(np.int8), PLANS, **kw)
