"""Recorded figures a report leaves out because the way they were recorded is known to be wrong, each with its
reason (the notes say how many were left out)."""

from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = ["drop_held_over_peaks", "held_over_peak"]


def held_over_peak(provenance: dict[str, Any] | None, params: dict[str, Any]) -> bool:
    """Whether a trial's recorded peak memory may include memory left allocated by earlier trials of its worker
    process: CUDA trials of commits that had CUDA graphs (`train.cuda_graph` among their parameters) but did not yet
    record `device_info.trial_in_process`. Those graphs warmed up on a new stream each time, and cuBLAS kept a
    workspace per stream for the life of the process (harness/cuda_graph.py side_stream): on an H200 a worker's peak
    rose by about 0.24 GB a trial for its first 8 trials (stores/interpolants, 3.36 -> 5.05 GB for one model)."""
    info = (provenance or {}).get("device_info")
    if not isinstance(info, dict) or "gpu" not in info or "trial_in_process" in info:
        return False
    graph = params.get("params.train.cuda_graph")
    return graph is not None and str(graph).lower() not in ("false", "nan", "none")


def drop_held_over_peaks(t: pd.DataFrame, provenance: dict[str, dict[str, Any]]) -> int:
    """Blank, in place, the peak memory of the trials of `t` (trial_key -> provenance.json in `provenance`) that
    `held_over_peak` flags (a figure known to be inflated is not published); returns how many (the report says so)."""
    if "metrics.peak_memory_gb" not in t.columns or not len(t):
        return 0
    params = [c for c in t.columns if c.startswith("params.")]
    flagged = [i for i, row in t.iterrows()
               if held_over_peak(provenance.get(row["trial_key"]), {c: row[c] for c in params})
               and not pd.isna(row["metrics.peak_memory_gb"])]
    if flagged:
        t.loc[flagged, "metrics.peak_memory_gb"] = float("nan")
    return len(flagged)
