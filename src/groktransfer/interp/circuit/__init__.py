"""The Fourier circuit of one model on one modular task, measured once (:class:`CircuitProfile`),
and how two such circuits compare.

Model reading only: the sweep-level analysis (which models to read, the report's tables,
figures and text) is ``groktransfer.analysis.circuits``, which calls this package.

Import from the modules (``groktransfer.interp.circuit.profile``, ...):

- ``profile``: :func:`profile_model` -- logit spectrum, neuron frequencies, attention from the
  last position, on every input, in the Fourier basis of the model's own task;
- ``neurons``: per-neuron dominant frequency, counts over thresholds, frequency mass;
- ``fourier_logits``: the logits' spectrum along the task's own target directions;
- ``attention``: mean attention of the last query, head labels, a/b asymmetry;
- ``similarity``: order-independent and neuron-matched comparisons of two profiles;
- ``retention``: accuracy and logit structure of a model on another task (its source's).
"""
