"""Training that reads only labelled rows: a model's epoch is one pass over the training rows
labelled for one of its targets, stacked and sequential alike, and its rows keep one order."""

import numpy as np
import pytest
import torch

from taskscout.models import Head
from taskscout.spec import ModelSettings, TrainingSettings
from taskscout.training import ModelPlan, train_models, train_sequential
from taskscout.training.inputs import MIN_STEPS, _batch_rows, _data_order, _DeviceData, _epoch_rows
from taskscout.training.stacked import _stacks

from .test_training import assert_same

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODEL = ModelSettings(depth=2, width=8)
# Segment tasks: each labelled on its own block of rows (sizes differ, so do the step counts).
HEADS = [Head("s0", "binary"), Head("s1", "regression"), Head("s2", "multiclass", 3), Head("s3", "binary"),
         Head("s4", "ordinal", 4)]
BLOCKS = (40, 90, 60, 150, 25)


def segment_data(seed=0):
    rng = np.random.default_rng(seed)
    n = sum(BLOCKS)
    X = rng.normal(size=(n, 4))
    Y = np.full((n, len(HEADS)), np.nan)
    start = 0
    for t, size in enumerate(BLOCKS):
        rows = slice(start, start + size)
        signal = X[rows, t % 4] + 0.3 * rng.normal(size=size)
        kind = HEADS[t].type
        Y[rows, t] = {"binary": signal > 0, "regression": signal,
                      "multiclass": np.digitize(signal, [-0.4, 0.4]),
                      "ordinal": np.digitize(signal, [-1, 0, 1])}[kind]
        start += size
    Y[rng.random(n) < 0.1, 1] = np.nan  # a few holes inside a segment, too
    split = rng.choice([0, 1, 2], size=n, p=[0.6, 0.2, 0.2]).astype(np.int8)
    return X, Y, split


PLANS = [
    ModelPlan((0,), (0,), seed=1, branch_layer=2),
    ModelPlan((1,), (1,), seed=1, branch_layer=2),
    ModelPlan((3,), (3,), seed=2, branch_layer=2),
    ModelPlan((0, 1), (0,), seed=1, branch_layer=2),
    ModelPlan((0, 1), (1,), seed=1, branch_layer=2),  # one row set and seed with the one above
    ModelPlan((2, 3), (2,), seed=3, branch_layer=1, loss_weights=(1.0, 0.5)),
    ModelPlan((4,), (4,), seed=4, branch_layer=1),
    ModelPlan((0, 4), (4,), seed=4, branch_layer=0, dropped_features=(1,)),
    ModelPlan((0, 1, 2, 3, 4), (2,), seed=5, branch_layer=2),
]


def settings(**kw):
    return TrainingSettings(**{"epochs": 6, "batch_size": 16, "patience": 2, "min_epochs": 0, **kw})


@pytest.mark.parametrize("weighting", ["equal", "uncertainty"])
def test_label_only_stacks_equal_the_sequential_reference_in_float64(weighting):
    X, Y, split = segment_data()
    kw = {"model": MODEL, "training": settings(weighting=weighting), "device": "cpu", "dtype": torch.float64,
          "eval_splits": ("val", "test")}
    stacked = train_models(X, Y, HEADS, split, PLANS, parallel_stacks=1, **kw)
    assert_same(stacked, train_sequential(X, Y, HEADS, split, PLANS, **kw), 1e-9)
    # ... and no model's result depends on which models share its stack
    alone = [train_models(X, Y, HEADS, split, [p], **kw)[0] for p in PLANS]
    assert_same(stacked, alone, 1e-12)


def test_an_epoch_is_one_pass_over_the_rows_labelled_for_a_target(monkeypatch):
    X, Y, split = segment_data()
    seen = []
    import taskscout.training.sequential as sequential

    real = sequential._epoch_rows

    def spy(data, seed, epoch, mask):
        rows = real(data, seed, epoch, mask)
        seen.append(rows.numpy())
        return rows

    monkeypatch.setattr(sequential, "_epoch_rows", spy)
    plan = ModelPlan((0, 3), (0,), seed=1, branch_layer=2)
    train_sequential(X, Y, HEADS, split, [plan], model=MODEL, training=settings(epochs=2, patience=5), device="cpu")
    labelled = np.flatnonzero((split == 0) & (np.isfinite(Y[:, 0]) | np.isfinite(Y[:, 3])))
    assert len(seen) == 2
    for rows in seen:
        assert sorted(rows) == list(labelled)  # each labelled training row once, no other row
    assert list(seen[0]) != list(seen[1])  # a new order each epoch


def test_a_tasks_rows_come_in_one_order_alone_and_with_a_partner():
    X, Y, split = segment_data()
    data = _DeviceData(X, Y, HEADS, split, dtype=torch.float64, device=torch.device("cpu"))
    for epoch in (1, 2, 7):
        alone = _epoch_rows(data, 3, epoch, data.model_rows((0,))).numpy()
        pair = _epoch_rows(data, 3, epoch, data.model_rows((0, 3))).numpy()
        own = set(np.flatnonzero(np.isfinite(Y[:, 0])))
        assert list(alone) == [r for r in pair if r in own]
    # with every row labelled, the order is the permutation of all training rows, as before
    dense = np.where(np.isnan(Y), 0.0, Y)
    data = _DeviceData(X, dense, HEADS, split, dtype=torch.float64, device=torch.device("cpu"))
    train = np.flatnonzero(split == 0)
    for seed, epoch in ((0, 1), (5, 3)):
        expected = train[_data_order(seed, epoch, len(train)).numpy()]
        assert list(_epoch_rows(data, seed, epoch, data.model_rows((0, 1))).numpy()) == list(expected)


def test_stacks_hold_one_step_count_and_dense_tables_stack_as_before():
    X, Y, split = segment_data()
    data = _DeviceData(X, Y, HEADS, split, dtype=torch.float64, device=torch.device("cpu"))
    B = 16
    chunks = _stacks(data, HEADS, PLANS, B, 64, 1)
    rows = [int(data.model_rows(p.targets).sum()) for p in PLANS]
    steps = [-(-m // _batch_rows(m, B)) for m in rows]
    assert len(set(steps)) > 1
    assert sorted(i for c in chunks for i in c) == list(range(len(PLANS)))
    for chunk in chunks:
        assert len({steps[i] for i in chunk}) == 1
        assert len({PLANS[i].branch_layer for i in chunk}) == 1
    dense = np.where(np.isnan(Y), 0.0, Y)
    data = _DeviceData(X, dense, HEADS, split, dtype=torch.float64, device=torch.device("cpu"))
    chunks = _stacks(data, HEADS, PLANS, B, 64, 1)
    assert len(chunks) == 3  # one stack per branch layer, as without row sets


def test_padding_rows_add_nothing():
    # A stack whose models differ in rows but not in step count pads the shorter ones' batches.
    X, Y, split = segment_data()
    plans = [ModelPlan((1,), (1,), seed=1, branch_layer=2), ModelPlan((2,), (2,), seed=1, branch_layer=2)]
    data = _DeviceData(X, Y, HEADS, split, dtype=torch.float64, device=torch.device("cpu"))
    B = 64
    rows = [int(data.model_rows(p.targets).sum()) for p in plans]
    assert rows[0] != rows[1] and _batch_rows(rows[0], B) != _batch_rows(rows[1], B)
    kw = {"model": MODEL, "training": settings(batch_size=B), "device": "cpu", "dtype": torch.float64}
    assert_same(train_models(X, Y, HEADS, split, plans, parallel_stacks=1, **kw),
                train_sequential(X, Y, HEADS, split, plans, **kw), 1e-9)


def test_models_with_few_rows_take_min_steps_smaller_batches():
    assert _batch_rows(10_000, 256) == 256 and _batch_rows(8 * 256, 256) == 256  # enough rows: as given
    assert _batch_rows(300, 256) == 38 and -(-300 // 38) == MIN_STEPS  # a segment: MIN_STEPS batches
    assert _batch_rows(600, 256) == 75  # ... and its pair too, so alone and together take the same steps
    assert _batch_rows(5, 256) == 1
