"""The Mamba-1 mixer: mamba_ssm-compatible parameters, K scan directions, fused or pure-PyTorch backend."""

from zigma.mixer.fused import FusedUnavailableError, fused_available
from zigma.mixer.mamba import BACKENDS, MambaMixer
from zigma.mixer.selective_scan import selective_scan_naive, selective_scan_ref

__all__ = [
           "BACKENDS",
           "FusedUnavailableError",
           "MambaMixer",
           "fused_available",
           "selective_scan_naive",
           "selective_scan_ref",
]
