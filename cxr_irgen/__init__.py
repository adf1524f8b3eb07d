"""cxr-irgen: synthetic chest X-ray images paired with radiology reports (CXR-IRGen)."""

from cxr_irgen.weights import register_resolver

__version__ = "0.1.0"

register_resolver()  # ${weights_path:...} in configs/ resolves wherever the configs are read
