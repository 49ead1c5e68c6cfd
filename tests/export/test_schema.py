"""Tests for taskscout.export.schema: the training config, typed and checked with the study spec's rules."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from taskscout.errors import SpecError
from taskscout.export import TrainingConfig, spec_from_config
from taskscout.spec import TrainingSettings

CONFIG = {
    "schema_version": 1, "taskscout_version": "0.1.0", "study": "hand",
    "data": {"source": "builtin:planted", "options": {"n_rows": 300}, "tasks": ["g0_t0", "g0_t1", "g1_t0"],
             "main": [], "task_types": {}, "inputs": None, "time_column": None, "entity_column": None,
             "task_column": None, "targets": [], "min_rows": 10},
    "preprocessing": {"version": 1},
    "split": {"val": 0.2, "test": 0.2, "by": "row", "per_segment": False, "seed": 0},
    "seed": 0,
    "auxiliary_generation": {"kinds": ["related"], "cap": 1, "caps": {}, "adversarial": [], "smooth_source": None,
                             "horizon": 1, "min_labelled": 20},
    "model": {"depth": 2, "width": 8, "adversarial_lambda": 1.0},
    "training": {"epochs": 3, "batch_size": 64, "patience": 10, "min_epochs": 0, "loss_weighting": "equal",
                 "optimiser": {"name": "adam", "lr": 0.01, "weight_decay": 0.0}, "device": "cpu"},
    "groups": [
        {"name": "g0_t0|g0_t1", "tasks": ["g0_t0", "g0_t1"], "serves": ["g0_t0", "g0_t1"], "branch_layer": 1,
         "branch_source": "depth", "auxiliaries": [], "loss_weights": {"g0_t0": 1.0, "g0_t1": 1.0},
         "expected_gain": {"g0_t0": 0.1, "g0_t1": 0.05}, "ci": {"g0_t0": [0.05, 0.15], "g0_t1": [0.0, 0.1]}},
        {"name": "g1_t0", "tasks": ["g1_t0"], "serves": ["g1_t0"], "branch_layer": 2, "branch_source": "default",
         "auxiliaries": [{"name": "g0_t0__related", "kind": "related", "serves": ["g1_t0"], "type": "regression",
                          "training_only": True, "adversarial": False, "drops_inputs": [],
                          "provenance": {"columns": ["g0_t0"]}, "expected_gain": {"g1_t0": 0.02},
                          "ci": {"g1_t0": [0.0, 0.04]}}],
         "loss_weights": {"g1_t0": 1.0, "g0_t0__related": 0.5}, "expected_gain": {}, "ci": {}},
    ],
}


def test_a_hand_written_config_round_trips_and_is_typed():
    config = TrainingConfig.from_dict(copy.deepcopy(CONFIG))
    assert config.to_dict() == CONFIG
    assert config.training.optimiser.lr == 0.01 and config.model.depth == 2
    assert config.groups[1].targets == ("g1_t0", "g0_t0__related")
    assert config.groups[1].auxiliaries[0].provenance == {"columns": ["g0_t0"]}
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 3  # type: ignore[misc]
    spec = spec_from_config(config)
    assert spec.tasks == ("g0_t0", "g0_t1", "g1_t0") and spec.training.lr == 0.01 and spec.training.patience == 10


def _broken(path: str, value):
    c = copy.deepcopy(CONFIG)
    node = c
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[keys[-1]] = value
    return c


def test_values_are_checked_by_the_study_specs_own_rules():
    # the rule text comes from the field of the study spec, declared once
    epochs = next(f for f in dataclasses.fields(TrainingSettings) if f.name == "epochs").metadata["expect"]
    with pytest.raises(SpecError) as e:
        TrainingConfig.from_dict(_broken("training.epochs", 0), where="t.yaml")
    assert str(e.value) == f"'training.epochs' in training config 't.yaml' must be {epochs}. Got 0 instead."
    for path, value, says in [
        ("model.width", 1, "'model.width' in training config '<mapping>' must be an int in [2, 4096]"),
        ("training.optimiser.lr", -3, "'training.optimiser.lr' in training config '<mapping>' must be a float in (0, 1]"),
        ("training.optimiser.name", "sgd", "'training.optimiser.name' in training config '<mapping>' must be 'adam'"),
        ("auxiliary_generation.kinds", ["nope"], "'auxiliary_generation.kinds' in training config"),
        ("split.by", "column", "'split.by' in training config '<mapping>' must be row or time"),
        ("groups.0.loss_weights", {"g0_t0": -1}, "'groups[0].loss_weights' in training config"),
        ("groups.1.auxiliaries.0.training_only", "yes", "'groups[1].auxiliaries[0].training_only' in training config"),
        ("training.epocs", 3, "unknown key 'training.epocs' in training config '<mapping>' (did you mean 'epochs'"),
        ("groups.0.branch_layer", 3, "groups[0].branch_layer in training config '<mapping>' must be an int in [0, 2]"),
        ("groups.0.loss_weights", {"zz": 1.0}, "groups[0].loss_weights in training config '<mapping>' must be a mapping from its targets"),
        ("seed", -1, "'seed' in training config '<mapping>' must be an int >= 0"),
    ]:
        with pytest.raises(SpecError) as e:
            TrainingConfig.from_dict(_broken(path, value))
        assert says in str(e.value), (path, str(e.value))


def test_required_keys_are_named():
    c = copy.deepcopy(CONFIG)
    del c["training"]["epochs"]
    with pytest.raises(SpecError, match=r"training.epochs in training config '<mapping>' must be an int in \[1, 10000\]. Got None"):
        TrainingConfig.from_dict(c)
    c = copy.deepcopy(CONFIG)
    del c["groups"][0]["serves"]  # default: the group's tasks
    assert TrainingConfig.from_dict(c).groups[0].serves == ("g0_t0", "g0_t1")
