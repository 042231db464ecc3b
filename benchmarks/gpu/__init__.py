"""Scripts for the lent GPU machine (see benchmarks/README.md)."""
