"""The built-in readings, registered in ``groktransfer.interp.reading.READINGS`` in the order
they run and are shown: the generic ones, then the digit family's and ``int_add``'s own."""

from ..reading import READINGS, register_reading
from .digit import DIGIT_READINGS
from .generic import GENERIC_READINGS
from .int_add import INT_ADD_READINGS

for _reading in (*GENERIC_READINGS, *DIGIT_READINGS, *INT_ADD_READINGS):
    register_reading(_reading)

__all__ = ["READINGS"]
