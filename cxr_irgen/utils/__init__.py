"""cxr_irgen.utils"""
