"""cxr_irgen.vision"""
