"""Private helpers of the metrics plugin: feature extractors, reference cache, metric classes, cost."""
