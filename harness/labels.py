"""How axis keys and values read in a report: column titles, table cells, variant labels and legends."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["BUDGET_KEYS", "axis_text", "missing", "model_label", "short_key", "variant_label"]

#: keys that set how long a trial trains and how often it is evaluated, not which model it trains: rows that differ
#: only in these (a study's equal-steps / equal-GPU-time / equal-FLOPs arms) are one model, drawn in one colour and
#: counted once in the iso-cost verdicts
BUDGET_KEYS = ("train.steps", "train.budget", "eval.every", "eval.intermediate_samples")


def short_key(key: str) -> str:
    """'scan.name' -> 'scan', 'train.lr' -> 'lr' (column titles and legends)."""
    parts = key.split(".")
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def _number(value: float) -> str:
    """200.0 -> '200', 1e10 -> '1e+10', 3.7 -> '3.7': a float read back from a table column reads as written."""
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:g}"


def axis_text(value: Any) -> str:
    """An axis value as text: a component with options ({name: heun, steps: 25}) as 'heun steps=25', a budget
    ({kind: gpu_seconds, value: 37}) as '37 gpu_seconds', a float as '%g' ('200', '1e+10'), others as str."""
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return " ".join([value["name"], *(f"{k}={axis_text(v)}" for k, v in value.items() if k != "name")])
    if isinstance(value, dict) and set(value) == {"kind", "value"}:
        return f"{axis_text(value['value'])} {value['kind']}"
    if isinstance(value, float):
        return _number(value)
    return str(value)


def variant_label(values: dict[str, Any]) -> str:
    """Axis values -> a short label: the value alone for one axis, 'k=v, k=v' for several, 'base' for none."""
    if not values:
        return "base"
    if len(values) == 1:
        return axis_text(next(iter(values.values())))
    return ", ".join(f"{short_key(k)}={axis_text(v)}" for k, v in values.items())


def missing(value: Any) -> bool:
    """Whether a trial row's axis cell is empty: None, or NaN (a key this trial's axes block does not set)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def model_label(trial: Any) -> str:
    """A trial row's (a pandas Series with `axis.<key>` entries) variant label without BUDGET_KEYS: its model."""
    values = {c[5:]: v for c, v in trial.items() if c.startswith("axis.") and c[5:] not in BUDGET_KEYS
              and not missing(v)}
    return variant_label(values)
