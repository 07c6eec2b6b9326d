"""Anomaly-detection models built from :mod:`anomaly_kernels.components`, as Lightning modules.

- :class:`PatchCore`: coreset memory bank of patch features, nearest-neighbour anomaly maps.
- :class:`PaDiM`: one Gaussian per feature position, Mahalanobis anomaly maps.
- :class:`DFKDE`: kernel density of pooled image features, image-level scores only.

Each Lightning module wraps a plain torch model (:class:`PatchcoreModel`, :class:`PadimModel`,
:class:`DfkdeModel`) that can be fitted and used without Lightning. The anomalib 0.3 spellings
``Patchcore``, ``Padim`` and ``Dfkde`` are aliases of the Lightning modules, whose bases live in
:mod:`anomaly_kernels.lightning`; the single-process algorithms they use live in
:mod:`anomaly_kernels.components`.
"""

from anomaly_kernels.lightning.one_pass_module import OnePassAnomalyModule
from anomaly_kernels.models.anomaly_map import AnomalyMapGenerator
from anomaly_kernels.models.dfkde import DFKDE, Dfkde, DfkdeModel

# Through the submodule on purpose: loaded here, before the name is bound to the function;
# a first load later would rebind ``models.nearest_neighbors`` to the module.
from anomaly_kernels.models.nearest_neighbors import nearest_neighbors
from anomaly_kernels.models.padim import PaDiM, Padim, PadimModel
from anomaly_kernels.models.patchcore import PatchCore, Patchcore, PatchcoreModel, reweighted_image_scores

__all__ = [
    "AnomalyMapGenerator",
    "DFKDE",
    "Dfkde",
    "DfkdeModel",
    "OnePassAnomalyModule",
    "PaDiM",
    "Padim",
    "PadimModel",
    "PatchCore",
    "Patchcore",
    "PatchcoreModel",
    "nearest_neighbors",
    "reweighted_image_scores",
]
