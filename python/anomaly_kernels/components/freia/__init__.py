"""Invertible neural networks: the blocks normalising-flow models (CFlow, FastFlow) are built from.

- :class:`InvertibleModule`: base class of blocks with an exact inverse and a log-determinant.
- :class:`SequenceINN`: a chain of blocks, run forward (x -> z) or inverted (z -> x).
- :class:`AllInOneBlock`: affine coupling + global affine scaling + fixed channel mixing.
"""

from __future__ import annotations

from anomaly_kernels.components.freia.all_in_one_block import AllInOneBlock
from anomaly_kernels.components.freia.invertible_module import InvertibleModule
from anomaly_kernels.components.freia.sequence_inn import SequenceINN

__all__ = ["AllInOneBlock", "InvertibleModule", "SequenceINN"]
