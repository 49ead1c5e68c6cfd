"""The data stage: load a table, check it against the study, split and preprocess it."""

from taskscout.data.builtin import BUILTINS, load_builtin
from taskscout.data.heads import HEAD_TYPES, Head, task_head
from taskscout.data.prepare import (
    SPLIT_NAMES,
    TEST,
    TRAIN,
    VAL,
    Dataset,
    TaskInfo,
    build_dataset,
    encode_target,
    infer_task_type,
    load_frame,
    summarize,
)

__all__ = [
    "BUILTINS", "HEAD_TYPES", "SPLIT_NAMES", "TEST", "TRAIN", "VAL", "Dataset", "Head", "TaskInfo", "build_dataset",
    "encode_target", "infer_task_type", "load_builtin", "load_frame", "summarize", "task_head",
]
