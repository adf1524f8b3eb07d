"""cxr-irgen: synthetic chest X-ray images paired with radiology reports (CXR-IRGen)."""

__version__ = "0.1.0"
