"""The MadMiner estimator family, one file per family, found by name through a registry.

| method | network | loss | file |
|---|---|---|---|
| carl | (x, theta0) -> log r | cross-entropy on s = 1/(1+r) with labels y | classifiers.py |
| alice | (x, theta0) -> log r | cross-entropy with soft labels 1/(1+r_xz) | classifiers.py |
| alices | (x, theta0) -> log r | alice + alpha * score MSE (score by autograd) | classifiers.py |
| rolr | (x, theta0) -> log r | MSE on r (theta1 samples) and 1/r (theta0 samples) | regression.py |
| rascal | (x, theta0) -> log r | rolr + alpha * score MSE | regression.py |
| sally | x -> t(x) | MSE on the joint score (local score at a fixed theta) | score.py |
| benchmark_ratio | x -> log r_b | cross-entropy, benchmark b against the reference (soft labels 1/(1+r_xz) by default) | benchmark_ratio.py |

`get_estimator(name)` returns the class; `cls.from_training(cfg.training)` an instance with its typed config.
"""

from sbi_core.ml.estimators.base import Estimator, EstimatorConfig
from sbi_core.ml.estimators.registry import get_estimator, known_estimators, register_estimator

__all__ = ["Estimator", "EstimatorConfig", "get_estimator", "known_estimators", "register_estimator"]
