"""Figures of a run, one module per figure, all drawn with the primitives of :mod:`.drawing`."""
