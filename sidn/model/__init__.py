"""SIDN network, one file per paper module (Sec. III).

fem.py (eq. 2), fsem.py (eq. 6-7, cluster centres), gsrm.py (eq. 21-24), sm.py (eq. 3-4),
sidn.py (Fig. 1, eq. 26), flops.py (FLOP / parameter counts).
"""

from sidn.model.fem import FEM, ResidualBlock
from sidn.model.flops import count_flops, count_parameters
from sidn.model.fsem import FSEM, kmeans
from sidn.model.gsrm import GSRM
from sidn.model.sidn import SIDN, SIZE_MULTIPLE, SIDNOutput, check_input_shape
from sidn.model.sm import SM, DeconvBlock

__all__ = [
    "FEM",
    "FSEM",
    "GSRM",
    "SM",
    "SIDN",
    "SIDNOutput",
    "SIZE_MULTIPLE",
    "DeconvBlock",
    "ResidualBlock",
    "check_input_shape",
    "count_flops",
    "count_parameters",
    "kmeans",
]
