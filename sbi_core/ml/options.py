"""The `training:` section of the analysis config: which estimators, how many, on which samples, how trained.

What to use when:
- `TrainingConfig` is `AnalysisConfig.training` (every field has a default, so a config without the section
  is valid); `cfg.training.samples`, `.network`, `.optimizer` are the sample, architecture and optimiser
  options of every network of the run.
- `KNOWN_METHODS` lists the estimator names `methods` accepts (the estimator registry's keys).
- The checks against the rest of the config are `sbi_core.ml.checks` (run by `sbi_core.analysis`).

The section is outside the events hash (`config.NOT_EVENT_FIELDS`): `sbi-core derive --set training...`
retrains a run on its events without simulating again.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator

from sbi_core.config_base import ConfigSection

MethodName = Literal["carl", "rolr", "rascal", "alice", "alices", "sally", "benchmark_ratio"]
#: Estimators the `methods` list accepts. Parametrised in theta (MadMiner's ParameterizedRatioEstimator):
#: carl, rolr, rascal, alice, alices; local score (ScoreEstimator): sally; one classifier per basis benchmark
#: against the reference: benchmark_ratio.
KNOWN_METHODS: tuple[str, ...] = get_args(MethodName)
#: Nuisance kinds that change the shape of p(x|theta, nu): they get per-variation networks.
SHAPE_KINDS = ("observable_scale", "shape_weight")


class SampleOptions(ConfigSection):
    """How the augmented training, validation and test samples are drawn from the run's events."""

    train: int = Field(
        default=20000, ge=10, le=10**9, title="Training samples",
        description="Unweighted samples per network set (half at theta0, half at theta1); "
        "validation_fraction of them form the validation set.",
    )
    validation_fraction: float = Field(
        default=0.2, gt=0.0, lt=1.0, title="Validation fraction",
        description="Share of the training samples held out for validation (early stopping).",
    )
    validation_events: Literal["separate", "shared"] = Field(
        default="separate", title="Validation events",
        description="separate: the validation set is drawn from events of its own, never trained on; shared "
        "(MadMiner's): from the training events, so the training samples are drawn from more events. Test events "
        "are always their own.",
    )
    test: int = Field(
        default=5000, ge=2, le=10**9, title="Test samples",
        description="Unweighted samples per network set in the test set, drawn from events never used for training.",
    )
    theta0: Literal["prior", "benchmarks", "fixed"] = Field(
        default="prior", title="theta0 sampling",
        description="Where parametrised estimators see theta0: prior (uniform over the parameter ranges), "
        "benchmarks (the basis benchmarks) or fixed (theta_fixed).",
    )
    n_thetas: int = Field(
        default=100, ge=1, le=100_000, title="Prior points",
        description="Distinct theta0 points drawn from the prior (theta0: prior) per half of the samples; "
        "samples are shared evenly.",
    )
    pairing: Literal["shared", "independent"] = Field(
        default="shared", title="theta0 of the theta1 half",
        description="theta0: prior only. shared: each prior point labels rows of both halves (y = 0 at theta0, "
        "y = 1 at theta1); independent (MadMiner's sample_train_ratio): the half drawn at theta1 gets its own "
        "n_thetas prior points. Measured on the benchmark model, independent is not better (docs/training.md).",
    )
    theta_fixed: dict[str, float] | None = Field(
        default=None, title="Fixed theta",
        description="Parameter values for theta0: fixed and for local score methods (sally); "
        "default: the sampling benchmark.",
    )
    chunk_rows: int = Field(
        default=100_000, ge=1, le=10**8, title="Chunk rows",
        description="Events read at once from the events file: bounds the memory of sbi-core sample.",
    )


class NetworkOptions(ConfigSection):
    """The multilayer perceptron every estimator uses (inputs standardised inside the model)."""

    hidden: list[int] = Field(
        default=[64, 64], min_length=1, max_length=32, title="Hidden layers",
        description="Width of each hidden layer, input side first.",
    )
    activation: Literal["tanh", "relu", "silu"] = Field(
        default="tanh", title="Activation", description="Nonlinearity after each hidden layer.",
    )

    @field_validator("hidden")
    @classmethod
    def _widths(cls, v: list[int]) -> list[int]:
        bad = [w for w in v if not 1 <= w <= 65536]
        if bad:
            raise ValueError(f"every width must be in 1..65536, got {bad}")
        return v


class OptimizerOptions(ConfigSection):
    """Adam with an exponentially decaying learning rate, gradient clipping and early stopping."""

    epochs: int = Field(default=30, ge=1, le=100_000, title="Epochs", description="Most passes over the training set.")
    batch_size: int = Field(default=256, ge=1, le=10**7, title="Batch size", description="Samples per gradient step.")
    learning_rate: float = Field(
        default=1e-3, gt=0.0, le=10.0, title="Learning rate", description="Adam learning rate at the first epoch."
    )
    learning_rate_final: float = Field(
        default=1e-4, gt=0.0, le=10.0, title="Final learning rate",
        description="Learning rate at the last epoch; it decays exponentially from learning_rate over the epochs.",
    )
    weight_decay: float = Field(
        default=0.0, ge=0.0, le=1.0, title="Weight decay", description="L2 penalty (Adam's weight_decay)."
    )
    clip_grad_norm: float = Field(
        default=10.0, ge=0.0, title="Gradient clipping", description="Largest gradient norm per step; 0 disables it."
    )
    patience: int = Field(
        default=5, ge=0, le=100_000, title="Patience",
        description="Epochs without a better validation loss before training stops; 0 disables early stopping.",
    )


class TrainingConfig(ConfigSection):
    """The learning stage: estimators, ensembles, per-variation networks, samples, network and optimiser."""

    methods: list[MethodName] = Field(
        default=["alices", "benchmark_ratio"], min_length=1, title="Methods",
        description="Estimators to train: carl, rolr, rascal, alice, alices, sally, benchmark_ratio.",
    )
    members: int = Field(
        default=3, ge=1, le=100, title="Ensemble members",
        description="Networks per head and variation (different seeds, bootstrap); the ensemble averages log r.",
    )
    min_members: int = Field(
        default=1, ge=1, le=100, title="Minimum members",
        description="Members that must train successfully for an ensemble to be built (at most members).",
    )
    bootstrap: bool = Field(
        default=True, title="Bootstrap",
        description="Each member trains on a bootstrap resample of the training set (else on all of it).",
    )
    variations: bool = Field(
        default=True, title="Per-variation networks",
        description="Train networks for nu = +1 and -1 of every shape systematic (kinds observable_scale, "
        "shape_weight) against nominal, at the reference benchmark.",
    )
    seed: int = Field(
        default=0, ge=0, lt=2**63, title="Training seed",
        description="Seeds sampling (SeedSequence of seed, method, head, variation, split) and training.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", title="Device", description="auto: CUDA when present, else CPU."
    )
    warm_start: str | None = Field(
        default=None, min_length=1, title="Warm start",
        description="URI of a run whose trained networks (the same ids and architecture) initialise this run's: "
        "training continues from their weights, e.g. after samples were added (active learning). None: seeded "
        "initial weights.",
    )
    alpha: float = Field(
        default=1.0, ge=0.0, le=1e6, title="Score weight",
        description="Weight of the joint-score term in the RASCAL and ALICES losses (MadMiner's alpha), in the "
        "units score_units names.",
    )
    score_units: Literal["standardised", "raw"] = Field(
        default="standardised", title="Score units",
        description="standardised (MadMiner's): the score term compares scores in standardised parameters, "
        "t * std(theta0), so alpha weighs every parameter alike; raw: in the parameters' own units "
        "(alpha_raw = alpha * std^2 per parameter).",
    )
    samples: SampleOptions = Field(
        default_factory=SampleOptions, title="Samples", description="Augmented training, validation and test sets."
    )
    network: NetworkOptions = Field(
        default_factory=NetworkOptions, title="Network", description="Architecture of every network."
    )
    optimizer: OptimizerOptions = Field(
        default_factory=OptimizerOptions, title="Optimizer", description="Optimiser, schedule and early stopping."
    )

    @field_validator("methods")
    @classmethod
    def _unique_methods(cls, v: list[str]) -> list[str]:
        dupes = sorted({m for m in v if v.count(m) > 1})
        if dupes:
            raise ValueError(f"methods listed twice: {dupes}")
        return v

    @model_validator(mode="after")
    def _members(self) -> TrainingConfig:
        if self.min_members > self.members:
            raise ValueError(f"min_members ({self.min_members}) must not exceed members ({self.members})")
        return self
