"""Training many small multi-task models at once.

`train_models` groups the plans by branch layer, cuts each group into stacks of at most
`stack_size` models and trains every stack as one computation (`models.StackedMLP`): batched
matrix products over a leading model axis, one Adam over the stacked tensors (Adam is
elementwise, so models stay independent), and the gradient of the loss summed over models, so
that each model's gradient is its own, computed by hand (`StackedMLP.backward`) with no autograd
graph. On CPU several stacks train at once in forked worker processes (`parallel.map_stacks`). Per model: its own seed (initial weights), its own data order (a function of
seed and epoch only), its own target subset, loss weights and dropped inputs, its own early
stopping. A model's result therefore does not depend on which models share its stack. Models
with the same seed see the same batches, so a stack gathers their rows once and runs their first
layer on one input matrix (`models.grouped_bmm`).

`train_sequential` trains the same plans one by one as plain `nn.Module`s with the same
initialisation, data order, losses and stopping rule: the reference the stacked trainer is tested
against, and the baseline of `taskscout bench`.

Losses per target (rows without a label contribute nothing; a batch without any label for a
target contributes 0): binary BCE with logits; multiclass cross-entropy; ordinal the mean over
k < C-1 of BCE between cumulative logit k and 1[y > k]; regression squared error (targets are
standardised); soft cross-entropy against the given class probabilities. Metrics: AUC for binary
(rank statistic, NaN when a split has one class), accuracy for multiclass, soft (against the most
probable class) and ordinal (prediction = number of cumulative logits > 0), RMSE in original units
for regression.

    plans.py       ModelPlan (what to train) and ModelResult (what came out)
    inputs.py      input checks, the label layout, the data on the device, the data order
    losses.py      losses and metrics per head; the stacked per-target loss sums
    model.py       one model: build, rebuild from a result, predict, evaluate
    optimiser.py   Adam over stacked tensors (fused where torch has it), allocator setting
    stacked.py     train_models: the stacked trainer
    sequential.py  train_sequential: the one-by-one reference
"""

from taskscout.data import Head
from taskscout.training.losses import head_metric, head_row_loss
from taskscout.training.model import build_model, evaluate_model, model_from_result, predict
from taskscout.training.optimiser import preload_optimiser
from taskscout.training.plans import ModelPlan, ModelResult
from taskscout.training.sequential import train_sequential
from taskscout.training.stacked import StackInterrupted, resolve_parallel_stacks, train_models

__all__ = [
    "Head", "ModelPlan", "ModelResult", "StackInterrupted", "build_model", "evaluate_model", "head_metric",
    "head_row_loss", "model_from_result", "predict", "preload_optimiser", "resolve_parallel_stacks", "train_models",
    "train_sequential",
]
