"""Networks built from isotropic layers, and element-wise baselines with the same layout."""

from .baselines import ElementwiseCNN as ElementwiseCNN
from .baselines import ElementwiseMLP as ElementwiseMLP
from .baselines import GeluLayerNormMLP as GeluLayerNormMLP
from .chain import AffineChain as AffineChain
from .chain import PsiMode as PsiMode
from .conv import IsotropicCNN as IsotropicCNN
from .grouped import GroupedIsotropicMLP as GroupedIsotropicMLP
from .mlp import IsotropicMLP as IsotropicMLP
from .residual import IsotropicFFN as IsotropicFFN
from .residual import IsotropicNorm as IsotropicNorm
from .residual import IsotropicResidualMLP as IsotropicResidualMLP
from .residual_conv import IsotropicResidualConv as IsotropicResidualConv
from .transformer import IsotropicTransformer as IsotropicTransformer
