"""The quantize → evaluate → report workflow, shared by ``qvision quantize --eval --report``
and ``qvision demo``."""

from qvision.evidence.workflow import Outcome, prove

__all__ = ["Outcome", "prove"]
