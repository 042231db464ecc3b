"""Training metrics kept in memory and sent to MLflow in one `MlflowClient.log_batch` (`train.log_buffer`), so the
training loop does not wait on the tracking store at every log step."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["MetricBuffer"]

_MAX_BATCH = 1000          # MLflow's limit of metrics in one log_batch


class MetricBuffer:
    """Callable like TrialHooks.log: `buffer(metrics, step)`; sends every `every` calls and on flush()."""

    def __init__(self, client: Any, run_id: str, every: int) -> None:
        self.client, self.run_id, self.every = client, run_id, every
        self._items: list[Any] = []
        self._calls = 0

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self._items += [Metric(k, float(v), now, step) for k, v in metrics.items()
                        if isinstance(v, int | float) and not isinstance(v, bool)]
        self._calls += 1
        if self._calls >= self.every:
            self.flush()

    def flush(self) -> None:
        """Send what is kept (in chunks of MLflow's batch limit)."""
        items, self._items, self._calls = self._items, [], 0
        for i in range(0, len(items), _MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i:i + _MAX_BATCH])
