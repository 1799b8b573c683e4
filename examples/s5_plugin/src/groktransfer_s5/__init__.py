"""Composition in the symmetric groups S4 and S5 as a groktransfer task family (an example plugin)."""
