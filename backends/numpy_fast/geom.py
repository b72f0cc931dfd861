"""The geometry of one convolution, as conv.py's GEMM paths and depthwise.py's shifted adds both read it."""

from __future__ import annotations

from typing import NamedTuple


class ConvGeom(NamedTuple):
    """One convolution: input (N, C, H, W) -> output (N, F, OH, OW); w (F, C/G, KH, KW)."""

    N: int
    C: int
    H: int
    W: int
    F: int
    KH: int
    KW: int
    G: int
    OH: int
    OW: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    top: int  # padding before row 0 / column 0 (the rest of the buffer is padding after)
    left: int
    Hb: int  # padded buffer: input + padding, and at least as far as the last window reaches
    Wb: int

    @property
    def flat(self) -> bool:
        return self.stride == (1, 1)

    @property
    def M(self) -> int:
        """Columns of the GEMMs: every output pixel of the batch (plus garbage ones when flat)."""
        return self.N * self.Hb * self.Wb if self.flat else self.N * self.OH * self.OW
