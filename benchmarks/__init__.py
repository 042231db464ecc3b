"""Speed and memory benchmarks of the backbones (ZigMa, Vim, DiT) side by side. Entry: `python -m benchmarks.bench`.

Imports only zigma, torch, numpy and matplotlib, so it runs on a bare GPU machine without the harness.
"""
