"""cxr_irgen.eval"""
