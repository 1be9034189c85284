"""NumPy CNN engine: forward and backward passes that keep every intermediate.

No web imports here: app/ turns these objects into JSON.
"""

from .mnist import load_mnist, test_split, train_split
from .network import LayerTrace, Network, Trace
from .optim import SGD, Adam, Momentum, Optimizer, make_optimizer, optimizer_from_state
from .spec import SpecError, layer_names, normalize_spec, parameter_count

__all__ = [
    "Network", "Trace", "LayerTrace", "SpecError", "normalize_spec", "parameter_count", "layer_names",
    "Optimizer", "SGD", "Momentum", "Adam", "make_optimizer", "optimizer_from_state",
    "load_mnist", "train_split", "test_split",
]
