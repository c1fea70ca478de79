"""The hidden-space mechanism: axes, spaces, primitives and optimizer-state transport."""

from .optim_state import register_optimizer as register_optimizer
from .space import Axis as Axis
from .space import HiddenLayer as HiddenLayer
from .space import HiddenSpace as HiddenSpace
from .space import HiddenSpaceModel as HiddenSpaceModel
from .space import transaction as transaction
