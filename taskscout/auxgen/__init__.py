"""Auxiliary tasks: candidate extra targets that may help a main task, with provenance.

One generator per kind (related, adversarial, hints, quantization, predict_inputs, future), each
in its own module and registered in `GENERATORS`; `generate_candidates` runs the requested ones
and screens their proposals; `encode_aux` codes a candidate for training; `dropped_features`
names the inputs a model must not see when it trains on given candidates.
"""

from taskscout.auxgen import adversarial, future, hints, predict_inputs, quantization, related  # noqa: F401  (fill GENERATORS)
from taskscout.auxgen.base import (
    AUX_TYPES,
    GENERATORS,
    AuxGenerator,
    AuxTask,
    labelled_mask,
    register,
)
from taskscout.auxgen.screening import (
    best_per_task,
    candidate_records,
    check,
    dropped_features,
    encode_aux,
    generate_candidates,
    why_none,
)

__all__ = [
    "AUX_TYPES", "GENERATORS", "AuxGenerator", "AuxTask", "best_per_task", "candidate_records", "check", "dropped_features",
    "encode_aux", "generate_candidates", "labelled_mask", "register", "why_none",
]
