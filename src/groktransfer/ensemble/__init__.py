"""Seed ensembles: jobs of a sweep trained together as one stacked model (see trainer.py)."""
