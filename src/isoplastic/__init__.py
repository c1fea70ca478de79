"""isoplastic: isotropic neural networks with adaptive topology.

The public contract (see the README): activations, networks, the symmetry operations and the
structural changes. Plotting, the trainer's CLI and the experiments are imported on demand and
never by ``import isoplastic``.

The core needs torch, numpy and safetensors only; the command line, progress bars, the embedded
digits data (scikit-learn) and the plots (matplotlib) come with ``pip install 'isoplastic[cli]'``.
"""

from importlib import metadata as _metadata

from .activations import AbstractRadialProfile as AbstractRadialProfile
from .activations import CallableProfile as CallableProfile
from .activations import IntrinsicLength as IntrinsicLength
from .activations import IsotropicActivation as IsotropicActivation
from .activations import IsotropicTanh as IsotropicTanh
from .activations import TanhProfile as TanhProfile
from .core import Axis as Axis
from .core import Change as Change
from .core import HiddenLayer as HiddenLayer
from .core import HiddenSpace as HiddenSpace
from .core import HiddenSpaceModel as HiddenSpaceModel
from .core import IsoplasticBlock as IsoplasticBlock
from .core import hidden_spaces as hidden_spaces
from .core import mirror as mirror
from .core import register_optimizer as register_optimizer
from .core import transaction as transaction
from .errors import ConfigError as ConfigError
from .errors import DataError as DataError
from .errors import IsoplasticError as IsoplasticError
from .errors import MissingExtraError as MissingExtraError
from .errors import NonFiniteError as NonFiniteError
from .errors import TopologyError as TopologyError
from .errors import UnsupportedOptimizerError as UnsupportedOptimizerError
from .linalg import ordered_svd as ordered_svd
from .linalg import random_orthogonal as random_orthogonal
from .nn import AffineChain as AffineChain
from .nn import ElementwiseCNN as ElementwiseCNN
from .nn import ElementwiseMLP as ElementwiseMLP
from .nn import GeluLayerNormMLP as GeluLayerNormMLP
from .nn import GroupedIsotropicMLP as GroupedIsotropicMLP
from .nn import IsotropicCNN as IsotropicCNN
from .nn import IsotropicFFN as IsotropicFFN
from .nn import IsotropicMLP as IsotropicMLP
from .nn import IsotropicNorm as IsotropicNorm
from .nn import IsotropicResidualConv as IsotropicResidualConv
from .nn import IsotropicResidualMLP as IsotropicResidualMLP
from .nn import IsotropicTransformer as IsotropicTransformer
from .nn import PsiMode as PsiMode
from .nn.parallel import parallel_forward as parallel_forward
from .ops.diagonalise import SparsifyReport as SparsifyReport
from .ops.diagonalise import count_nonzero as count_nonzero
from .ops.diagonalise import full_diagonalise as full_diagonalise
from .ops.diagonalise import left_diagonalise as left_diagonalise
from .ops.diagonalise import singular_values as singular_values
from .ops.diagonalise import sparsify as sparsify
from .ops.diagonalise import sparsity_closed_form as sparsity_closed_form
from .ops.reparameterise import reparameterise as reparameterise
from .topology.grow import neurogenesis as neurogenesis
from .topology.policies import AbstractPolicy as AbstractPolicy
from .topology.policies import ChangeRefused as ChangeRefused
from .topology.policies import FixedTopology as FixedTopology
from .topology.policies import ScaffoldPolicy as ScaffoldPolicy
from .topology.policies import WidthSchedule as WidthSchedule
from .topology.policies import neuroadapt as neuroadapt
from .topology.policies import set_width as set_width
from .topology.record import StructuralChange as StructuralChange
from .topology.resize import add_inputs as add_inputs
from .topology.resize import add_outputs as add_outputs
from .topology.resize import remove_inputs as remove_inputs
from .topology.resize import remove_outputs as remove_outputs
from .topology.shrink import neurodegeneration as neurodegeneration
from .topology.shrink import remove_neurons as remove_neurons
from .verify import FunctionChange as FunctionChange
from .verify import function_change as function_change

try:  # one source of truth: the version in pyproject.toml, as installed
    __version__ = _metadata.version("isoplastic")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"


def load(run_dir, arm: str = "adaptive", *, model=None, device="cpu", recompute: bool = False):
    """The trained model of an ``isoplastic train`` run, taking raw inputs in the data set's
    own units (the saved standardisation is applied inside), in eval mode.

    ``model = isoplastic.load("runs/demo"); logits = model(x_raw)``; ``model.predict(x_raw)``
    gives labels and ``model.net`` the trained network. A run that trained your own model
    needs a freshly constructed instance of it: ``isoplastic.load(run_dir, model=MyModel())``.
    See :func:`isoplastic.train.inference.load` for the arguments.
    """
    from .train.inference import load as _load  # the trainer is imported on demand

    return _load(run_dir, arm, model=model, device=device, recompute=recompute)
