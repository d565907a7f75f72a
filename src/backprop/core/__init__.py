"""The math, pure, on any array-API namespace: activations, losses, the dense layer, the MLP and its
backward pass, input validation, optimizers and the tree utilities.  Imports nothing above `backprop.backends`."""
