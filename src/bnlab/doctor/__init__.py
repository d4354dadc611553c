"""The BN doctor: diagnose, prove, repair, for PyTorch and Keras 3 models.

``diagnose(model, data)`` names each BN problem of a trained model with the numbers behind
it and proves the main cause by intervening on a copy; ``recalibrate(model, data)`` returns
a copy with exact population statistics (PreciseBN). Checks are written once against
:class:`~bnlab.doctor.adapters.ModelAdapter`; Keras is imported only for Keras models.
"""

from bnlab.doctor.adapters import BNLayer, Graph, ModelAdapter, Node, adapt
from bnlab.doctor.checks import CHECKS, FINDING_IDS
from bnlab.doctor.diagnose import diagnose
from bnlab.doctor.diagnosis import Diagnosis
from bnlab.doctor.findings import Finding
from bnlab.doctor.recalibrate import recalibrate

__all__ = [
    "BNLayer",
    "CHECKS",
    "Diagnosis",
    "FINDING_IDS",
    "Finding",
    "Graph",
    "ModelAdapter",
    "Node",
    "adapt",
    "diagnose",
    "recalibrate",
]
