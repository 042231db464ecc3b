"""Token mixers: Mamba-1 and Mamba-2 (SSD), mamba_ssm-compatible parameters, K scan directions, fused or
pure-PyTorch backend. Every mixer is (B, L, D) -> (B, L, D) with `forward(x, *, segments=1, branch_index=None)`."""

from zigma.mixer.fused import FusedUnavailableError, fused_available
from zigma.mixer.mamba import BACKENDS, MambaMixer
from zigma.mixer.mamba2 import Mamba2Mixer
from zigma.mixer.segments import SEGMENT_LAYOUTS
from zigma.mixer.selective_scan import selective_scan_naive, selective_scan_ref
from zigma.mixer.ssd import ssd_chunked

__all__ = [
           "BACKENDS",
           "FusedUnavailableError",
           "Mamba2Mixer",
           "MambaMixer",
           "SEGMENT_LAYOUTS",
           "fused_available",
           "selective_scan_naive",
           "selective_scan_ref",
           "ssd_chunked",
]
