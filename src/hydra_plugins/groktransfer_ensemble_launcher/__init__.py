"""Hydra launcher plugin ``hydra/launcher=ensemble``: a sweep's compatible jobs train as seed ensembles."""
