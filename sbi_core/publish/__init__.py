"""Publishing a measurement: the likelihood as a self-contained artefact (`sbi-core export-likelihood`).

Looks down on every stage room (it reads the run's config, dataset, likelihood arrays, fit and networks);
nothing imports it but the CLI.
"""
