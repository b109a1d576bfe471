"""fastoptim: fused, in-place Momentum, RMSProp and Adam/AdamW steps for NumPy arrays.

Layers, from the bottom up:
  fastoptim._kernels_*      compiled Cython kernels (one module, built per instruction set)
  fastoptim.functional      checked functional API: sgd_, rmsprop_, adam_, adamw_, adagrad_, ...
  fastoptim.reference       the same update rules in plain NumPy (tests, benchmarks)
  fastoptim.quantized       QuantizedState: 8-bit blockwise state the functional API takes
  fastoptim.optim           optimizer classes (torch.optim-style; they only manage state)
  fastoptim.lr_scheduler, fastoptim.clip, fastoptim.checkpoint
  fastoptim.nn, fastoptim.datasets       the dense network, estimators, bundled digits
  fastoptim.model_selection, .ensemble   K-fold search and vote ensembles
  fastoptim.cli (python -m fastoptim)    the main job
"""

from fastoptim._alloc import zeros_state_like
from fastoptim._backend import get_num_threads, set_num_threads
from fastoptim.functional import (adadelta_, adafactor_, adagrad_, adam_, adamax_, adamw_,
                                  adamw_schedule_free_, asgd_, lion_, muon_, nadam_, radam_,
                                  rmsprop_, rprop_, sgd_)
from fastoptim.optim import (ASGD, LBFGS, SGD, Adadelta, Adafactor, Adagrad, Adam, Adamax, AdamW,
                             AdamWScheduleFree, Lion, Momentum, Muon, NAdam, Optimizer, RAdam,
                             RMSprop, Rprop)
from fastoptim.quantized import QuantizedState
from fastoptim.clip import clip_grad_norm_, clip_grad_value_
from fastoptim.checkpoint import load, save
from fastoptim import lr_scheduler, optim
from fastoptim.nn import MLP, MLPClassifier, MLPRegressor
from fastoptim.datasets import load_digits, train_test_split, train_val_test_split
from fastoptim.model_selection import KFold, KFoldSearch, StratifiedKFold
from fastoptim.ensemble import VotingEnsemble

__version__ = "0.1.0"

__all__ = [
    "sgd_", "rmsprop_", "adam_", "adamw_", "adafactor_", "muon_",
    "Optimizer", "SGD", "Momentum", "RMSprop", "Adam", "AdamW", "Adafactor", "Muon", "LBFGS",
    "clip_grad_norm_", "clip_grad_value_", "save", "load", "lr_scheduler", "optim",
    "MLP", "MLPClassifier", "MLPRegressor", "load_digits", "train_test_split",
    "train_val_test_split", "KFold", "StratifiedKFold", "KFoldSearch", "VotingEnsemble",
    "set_num_threads", "get_num_threads", "show_config", "zeros_state_like",
    "adagrad_", "lion_", "adamax_", "radam_", "adadelta_", "rprop_", "nadam_", "asgd_",
    "adamw_schedule_free_",
    "Adagrad", "Lion", "Adamax", "RAdam", "Adadelta", "Rprop", "NAdam", "ASGD",
    "AdamWScheduleFree",
    "QuantizedState",
]


def show_config(file=None):
    """Print the version, the instruction set in use, OpenMP and the thread count."""
    import sys

    from fastoptim import _backend

    if file is not None and not callable(getattr(file, "write", None)):
        raise TypeError(f"file must be a writable text stream (with a write method) or None, "
                        f"got {type(file).__name__}")

    kernels = _backend.kernels
    lines = [
        f"fastoptim {__version__}",
        f"kernels: {kernels.__name__.rsplit('.', 1)[-1]} (instruction set: {kernels.ISA})",
        f"CPU has AVX2+FMA: {kernels.cpu_has_avx2_fma()}",
        f"OpenMP: {'on' if kernels.HAVE_OPENMP else 'off'}",
        f"threads per kernel call: {get_num_threads()}",
        f"parallel from: {kernels.get_parallel_min_elements()} elements per call",
        f"Adam's bias-correction division: "
        f"{'FMA reciprocal (exact)' if kernels.HAVE_FMA else 'divide instruction'}",
    ]
    print("\n".join(lines), file=sys.stdout if file is None else file)
