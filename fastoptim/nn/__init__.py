"""Dense neural networks on NumPy, trained with fastoptim's fused optimizers.

- :class:`MLP` -- layers ``f(W x + b)``; all weights and biases are views into ONE flat
  parameter buffer (``net.params_flat``) and all gradients into ONE flat gradient buffer
  (``net.grads_flat``), so an optimizer step is one fused kernel call.
- :func:`train` / :meth:`MLP.fit` -- mini-batch training with validation, LR schedules,
  early stopping (best weights restored) and a per-epoch :class:`History`.
- :class:`MLPClassifier`, :class:`MLPRegressor` -- drop-in replacements for
  scikit-learn's estimators of the same names (scikit-learn is not needed; scipy only
  for ``solver="lbfgs"``).
- :class:`DivergenceError` -- the loss became NaN/inf (a FloatingPointError and a
  ValueError).

Example::

    import numpy as np
    from fastoptim.datasets import load_digits, train_test_split
    from fastoptim.nn import MLP
    from fastoptim.optim import Adam

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16, y, test_size=0.2,
                                                        random_state=0)
    net = MLP([64, 128, 64, 10], activation="relu", output="softmax",
              dtype=np.float32, alpha=1e-4, seed=0)
    opt = Adam([net.params_flat], lr=1e-3)          # one fused step per mini-batch
    history = net.fit(X_train, y_train, optimizer=opt, epochs=80, batch_size=64,
                      validation_fraction=0.1, early_stopping=True, seed=0)
    accuracy = np.mean(net.forward(X_test).argmax(axis=1) == y_test)   # ~0.98
"""

from ._estimators import (ConvergenceWarning, DataConversionWarning, MLPClassifier,
                          MLPRegressor, NotFittedError)
from ._network import ACTIVATIONS, MLP, OUTPUTS
from ._training import DivergenceError, History, make_optimizer, train

__all__ = ["MLP", "History", "train", "make_optimizer", "MLPClassifier", "MLPRegressor",
           "ConvergenceWarning", "DataConversionWarning", "NotFittedError", "DivergenceError",
           "ACTIVATIONS", "OUTPUTS"]
