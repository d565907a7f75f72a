"""The sub-commands of the ``backprop`` command line, one module each (see `backprop.cli`)."""
