"""The learning stage: the `training:` config section, augmented samples, estimators, training, evaluation.

This package must import cheaply: torch and h5py are imported by the modules that need them, never here.
"""
