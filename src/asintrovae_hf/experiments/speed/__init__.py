"""
The speed and memory measurements behind `scripts/benchmark.py`, one section per module: timing, peak memory and
tables (`measure.py`), the AS-Distance against its naive broadcast form (`as_distance_speed.py`), training iterations
per objective and gradient checkpointing (`iteration_speed.py`) and the side-by-side loop against the authors'
reference code (`vs_reference.py`). `SECTIONS` maps each section's name to a function taking the parsed command-line
arguments and returning a list of dicts, one per measured configuration; `TABLE_COLUMNS` names the columns of its
printed table. A new measurement goes here; the top-level package does not import this one.
"""

from typing import Callable, Dict, List

from .as_distance_speed import COLUMNS as _AS_DISTANCE_COLUMNS
from .as_distance_speed import section_as_distance
from .measure import format_table
from .iteration_speed import (
    CHECKPOINTING_COLUMNS,
    TRAINING_COLUMNS,
    TRAINING_CONFIGS,
    section_gradient_checkpointing,
    section_training,
)
from .vs_reference import COLUMNS as _VS_REFERENCE_COLUMNS
from .vs_reference import section_vs_reference

SECTIONS: Dict[str, Callable[..., List[Dict]]] = {
    "as_distance": section_as_distance,
    "training": section_training,
    "vs_reference": section_vs_reference,
    "gradient_checkpointing": section_gradient_checkpointing,
}

TABLE_COLUMNS: Dict[str, List[str]] = {
    "as_distance": _AS_DISTANCE_COLUMNS,
    "training": TRAINING_COLUMNS,
    "gradient_checkpointing": CHECKPOINTING_COLUMNS,
    "vs_reference": _VS_REFERENCE_COLUMNS,
}

__all__ = ["SECTIONS", "TABLE_COLUMNS", "TRAINING_CONFIGS", "format_table"]
