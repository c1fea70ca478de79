"""Networks built from isotropic layers, and element-wise baselines with the same layout."""

from .baselines import ElementwiseMLP as ElementwiseMLP
from .mlp import IsotropicMLP as IsotropicMLP
from .mlp import PsiMode as PsiMode
