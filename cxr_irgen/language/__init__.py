"""cxr_irgen.language"""
