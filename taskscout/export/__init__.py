"""Export a recommendation as a versioned training config, and train the models it describes.

`export_config(run_dir)` turns spec.json + recommendation.json (+ candidates.json for the
auxiliaries' provenance) into a plain mapping that holds everything needed to rebuild the data,
the auxiliary targets and one network per recommended group, with no reference to the run
directory: data source (a data file as an absolute path) and options, tasks and inputs,
preprocessing, split and seed, the auxiliary generator settings, model sizes, loss weighting,
optimiser and epochs. `write_config` saves it as YAML or JSON.

`train_config(config, out_dir=...)` rebuilds the data set (data.build_dataset) and the named
auxiliaries (auxgen.generate_candidates with the exported settings, then picked by name and
checked against their exported provenance), trains one model per group with
training.train_models, evaluates it on the validation and test splits, and writes metrics.json
and one checkpoint per group (a dict of plain values and the state dict, loadable with
``torch.load(path, weights_only=True)``; `load_trained` rebuilds the network from it).

Exporting needs no torch; training and loading import it when called.

    config.py  the config schema (constants) and reading and checking a config file
    write.py   export_config and write_config: a run's recommendation as a config file
    train.py   train_config, its metrics and checkpoints, and load_trained
"""

from taskscout.export.config import (
    CONFIG_SCHEMA_VERSION,
    FORMATS,
    METRICS,
    PREPROCESSING,
    SUFFIXES,
    TOP_KEYS,
    check_config,
    load_config,
    spec_from_config,
)
from taskscout.export.train import TrainedGroup, TrainOutcome, load_trained, train_config
from taskscout.export.write import (
    check_config_path,
    check_models_dir,
    config_format,
    export_config,
    group_auxiliaries,
    write_config,
)

__all__ = [
    "CONFIG_SCHEMA_VERSION", "FORMATS", "METRICS", "PREPROCESSING", "SUFFIXES", "TOP_KEYS", "TrainOutcome",
    "TrainedGroup", "check_config", "check_config_path", "check_models_dir",
    "config_format", "export_config", "group_auxiliaries", "load_config", "load_trained", "spec_from_config",
    "train_config", "write_config",
]
