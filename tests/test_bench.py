"""`taskscout bench` at tiny sizes: the JSON keys and sane values (never timings)."""

import json

import numpy as np
import pytest
import torch

from taskscout.bench import bench_plans, bench_problem, run_bench
from taskscout.cli import main
from taskscout.errors import SpecError
from taskscout.models import stack_layer_shapes, stack_matmul_flops
from taskscout.training.inputs import MIN_STEPS

KEYS = {"device", "threads", "models", "sequential_models_per_s", "stacked_models_per_s", "speedup",
        "achieved_gflops", "matmul_peak_gflops", "fraction_of_peak", "peak_memory_mib"}
TINY = ["--models", "3", "--inputs", "5", "--width", "8", "--tasks", "4", "--batch", "16", "--steps", "4",
        "--epochs", "2", "--device", "cpu", "--threads", "1"]


@pytest.fixture(autouse=True)
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_bench_json_has_the_design_keys_and_sane_values(capsys):
    assert main(["bench", *TINY, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert KEYS <= out.keys()
    assert out["device"] == "cpu" and out["models"] == 3 and out["threads"] == 1
    for key in ("sequential_models_per_s", "stacked_models_per_s", "speedup", "achieved_gflops",
                "matmul_peak_gflops", "fraction_of_peak", "peak_memory_mib"):
        assert out[key] > 0, key
    assert out["speedup"] == pytest.approx(out["stacked_models_per_s"] / out["sequential_models_per_s"])
    assert out["fraction_of_peak"] == pytest.approx(out["achieved_gflops"] / out["matmul_peak_gflops"])
    assert out["max_loss_difference"] < 1e-4  # both loops trained the same models
    assert out["parallel_stacks"] == 1  # one torch thread: one stack at a time
    assert out["products_gflops"] > 0
    assert out["products_fraction_of_peak"] == pytest.approx(out["products_gflops"] / out["matmul_peak_gflops"])


def test_bench_parallel_stacks_flag(capsys):
    assert main(["bench", *TINY, "--parallel-stacks", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["parallel_stacks"] == 2 and out["max_loss_difference"] < 1e-4
    assert main(["bench", *TINY, "--parallel-stacks", "0"]) == 2
    assert "--parallel-stacks must be an int >= 1" in capsys.readouterr().err


def test_bench_prints_a_summary(capsys):
    assert main(["bench", *TINY, "--sequential-models", "1"]) == 0
    text = capsys.readouterr().out
    assert "speed-up" in text and "models/s" in text and "(1 models in" in text
    assert "for the same products alone" in text


def test_bench_shows_progress_unless_quiet(capsys):
    assert main(["bench", *TINY, "--sequential-models", "1"]) == 0
    err = capsys.readouterr().err
    assert "stacked" in err and "sequential" in err and "1/1" in err
    assert main(["bench", *TINY, "--sequential-models", "1", "--quiet"]) == 0
    assert "sequential" not in capsys.readouterr().err


def test_bench_rejects_bad_sizes(capsys):
    assert main(["bench", *TINY, "--dtype", "float16"]) == 2
    assert "--dtype must be float32 or float64" in capsys.readouterr().err
    with pytest.raises(SpecError, match="multiple of --epochs"):
        run_bench(models=2, steps=5, epochs=2, device="cpu")
    with pytest.raises(SpecError, match="--models must be an int >= 1"):
        run_bench(models=0, device="cpu")


def test_problem_and_flop_count_by_hand():
    X, Y, heads, split = bench_problem(models=2, inputs=3, tasks=5, batch=4, steps=6, epochs=3)
    assert X.shape == (8 + 512, 3) and Y.shape == (520, 5)
    assert [h.type for h in heads] == ["binary", "multiclass", "ordinal", "regression", "binary"]
    assert (split == 0).sum() == 8  # 2 steps per epoch of batch 4
    # one model, one layer 3 -> 4 shared, head 4 -> 2 for one slot, 10 rows:
    # forward 2*10*(3*4 + 4*2) = 400; backward: weights of both layers (240 + 160), inputs of the head (160)
    assert stack_matmul_flops(models=1, in_features=3, depth=1, width=4, branch_layer=1, slots=1, out_width=2,
                              rows=10, backward=False) == 400
    assert stack_matmul_flops(models=1, in_features=3, depth=1, width=4, branch_layer=1, slots=1, out_width=2,
                              rows=10, backward=True) == 400 + 240 + 160 + 160


def test_layer_shapes_by_hand():
    # 2 shared layers 5 -> 8 -> 8, then the output layer 8 -> 3 per slot (4 slots)
    assert stack_layer_shapes(in_features=5, depth=2, width=8, branch_layer=2, slots=4, out_width=3) == [
        (5, 8, 1), (8, 8, 1), (8, 3, 4)]
    # branch at 1: layer 2 is a per-slot tower
    assert stack_layer_shapes(in_features=5, depth=2, width=8, branch_layer=1, slots=4, out_width=3) == [
        (5, 8, 1), (8, 8, 4), (8, 3, 4)]


def test_products_ceiling_runs_the_counted_products(monkeypatch):
    # Count the products it runs: per step, 3 per layer but 2 for the first (no input gradient).
    import taskscout.bench as bench

    calls = []
    real = torch.bmm

    def counting(a, b, **kw):
        calls.append((tuple(a.shape), tuple(b.shape)))
        return real(a, b, **kw)

    monkeypatch.setattr(bench.torch, "bmm", counting)
    rate = bench.products_gflops(models=3, parallel_stacks=1, in_features=5, depth=2, width=8, branch_layer=1,
                                 slots=2, out_width=3, rows=4, steps=2, device=torch.device("cpu"),
                                 dtype=torch.float32)
    assert rate > 0
    timed = calls[8:]  # after the one-model warm-up step (8 products)
    assert len(timed) == 2 * 8
    # the tower layer (both slots at once, as the trainer runs it): forward (3, 4, 8) @ (3, 8, 16)
    assert ((3, 4, 8), (3, 8, 16)) in timed
    # a shared trunk's output layer runs transposed, as the trainer runs it: (3 models, 2 x 3 outputs, 4 rows)
    calls.clear()
    bench.products_gflops(models=3, parallel_stacks=1, in_features=5, depth=2, width=8, branch_layer=2,
                          slots=2, out_width=3, rows=4, steps=1, device=torch.device("cpu"), dtype=torch.float32)
    assert ((3, 6, 8), (3, 8, 4)) in calls[8:] and len(calls[8:]) == 8


def test_bench_plans_share_seeds_and_differ_within_one(capsys):
    plans = bench_plans(6, 3, 2, seeds=2)
    assert [p.seed for p in plans] == [0, 1, 0, 1, 0, 1]
    same_seed = [p.loss_weights for p in plans if p.seed == 0]
    assert len(set(same_seed)) == 3 and all(w[0] == 1.0 for w in same_seed)  # main weight 1, the others differ
    assert all(p.loss_weights is None for p in bench_plans(4, 3, 2))  # default: one seed per model
    assert main(["bench", *TINY, "--seeds", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seeds"] == 1 and out["max_loss_difference"] < 1e-4  # one batch set, same models both ways
    assert main(["bench", *TINY, "--seeds", "0"]) == 2
    assert "--seeds must be an int >= 1" in capsys.readouterr().err


def test_products_ceiling_reads_one_input_matrix_per_seed(monkeypatch):
    import taskscout.bench as bench
    from taskscout import parallel

    seen = []
    real = bench.grouped_bmm

    def spy(a, b, sizes):
        seen.append((a.shape[0], sizes))
        return real(a, b, sizes)

    monkeypatch.setattr(bench, "grouped_bmm", spy)
    monkeypatch.setattr(parallel, "forks_workers", lambda: False)  # threads: `seen` is this process's
    bench.products_gflops(models=6, parallel_stacks=2, in_features=5, depth=2, width=8, branch_layer=2, slots=2,
                          out_width=3, rows=4, steps=1, device=torch.device("cpu"), dtype=torch.float32, seeds=2)
    # two stacks of three models in seed order (0, 0, 0 | 1, 1, 1): one input matrix each,
    # for the first layer's forward product and weight gradient
    assert seen[2:] == [(1, (3,))] * 4


def test_bench_label_fraction_trains_on_the_labelled_rows_only(capsys):
    # 16 batches of 4 rows per epoch when dense: above MIN_STEPS, so the batch stays 4 rows
    bigger = [*TINY, "--batch", "4", "--steps", "32"]
    assert main(["bench", *bigger, "--label-fraction", "0.2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["label_fraction"] == 0.2 and out["max_loss_difference"] < 1e-4
    assert 16 <= out["steps_run"] < 32  # fewer steps over the rows labelled for one of the 4 tasks
    assert main(["bench", *bigger, "--json"]) == 0
    dense = json.loads(capsys.readouterr().out)
    assert dense["label_fraction"] == 1.0 and dense["steps_run"] == 32
    assert main(["bench", *TINY, "--json"]) == 0  # 4 batches of 16 rows: the trainer takes MIN_STEPS smaller ones
    assert json.loads(capsys.readouterr().out)["steps_run"] == 2 * MIN_STEPS
    X, Y, heads, split = bench_problem(models=2, inputs=3, tasks=2, batch=50, steps=4, epochs=2, label_fraction=0.1)
    labelled = np.isfinite(Y)
    assert 0.03 < labelled.mean() < 0.2 and labelled[split == 0].any(0).all() and labelled[split == 1].any(0).all()
    assert main(["bench", *TINY, "--label-fraction", "0"]) == 2
    assert "--label-fraction must be a number in (0, 1]" in capsys.readouterr().err
