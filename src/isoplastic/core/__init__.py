"""The hidden-space mechanism: axes, spaces, the change pipeline, optimizer-state transport and
the model contract."""

from .change import Change as Change
from .change import Journal as Journal
from .change import transaction as transaction
from .model import HiddenLayer as HiddenLayer
from .model import HiddenSpaceModel as HiddenSpaceModel
from .model import IsoplasticBlock as IsoplasticBlock
from .model import MirrorHandle as MirrorHandle
from .model import hidden_spaces as hidden_spaces
from .model import mirror as mirror
from .optim_state import register_optimizer as register_optimizer
from .space import Axis as Axis
from .space import HiddenSpace as HiddenSpace
