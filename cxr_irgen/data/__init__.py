"""Data layer: labels and prompts, MIMIC-CXR index, report sections, reference lookup, datasets, phantoms, image IO."""
