"""The learning stage: the `training:` config section, augmented samples, estimators, training, evaluation.

This package must import cheaply: torch and h5py are imported by the modules that need them, never here.

What to use when:
- `options.TrainingConfig`: the `training:` section of the analysis config.
- `mlp.build_mlp` / `mlp.MLP`: the network every estimator trains (input standardisation inside the model).
- `estimators.get_estimator(name)`: the method family (CARL, ROLR, RASCAL, ALICE, ALICES, SALLY,
  benchmark_ratio) with its typed config and documented loss.
- `trainer.train_network`: one network, checkpointed every epoch and resumed after a kill.
- `ensemble.load_ensemble`: the trained members of one (method, head, variation), evaluated together.
- `export.export_network` / `export.forward`: a trained network as plain arrays and a numpy forward pass.
"""
