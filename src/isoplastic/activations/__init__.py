"""Isotropic activations ``φ(z) = s(ρ)/ρ · z``, with radial profiles and the intrinsic length."""

from .isotropic import IntrinsicLength as IntrinsicLength
from .isotropic import IsotropicActivation as IsotropicActivation
from .isotropic import IsotropicTanh as IsotropicTanh
from .profiles import AbstractRadialProfile as AbstractRadialProfile
from .profiles import CallableProfile as CallableProfile
from .profiles import TanhProfile as TanhProfile
from .profiles import log1p_profile as log1p_profile
