"""Where a run's artifacts live. The ONE place that builds artifact URIs from a run root."""

from __future__ import annotations

from dataclasses import dataclass

from sbi_core import storage


@dataclass(frozen=True)
class RunLayout:
    """Artifact URIs of one run under `root` (a local directory or an s3:// prefix)."""

    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", storage.normalize(self.root))

    @property
    def config(self) -> str:
        """The resolved, validated config (configure writes it; every later step reads it)."""
        return storage.join(self.root, "config.yaml")

    @property
    def plan(self) -> str:
        """The generation plan: shard sizes, combine groups, chunk rows, config hash."""
        return storage.join(self.root, "plan.json")

    @property
    def setup(self) -> str:
        """Header-only HDF5 file: parameters, benchmarks, morphing, observables, nuisance parameters."""
        return storage.join(self.root, "setup.h5")

    @property
    def sampler(self) -> str:
        """The trained phase-space sampler (`sbi-core train-sampler`) every generate shard draws from."""
        return storage.join(self.root, "sampler", "proposal.bin")

    def shard(self, index: int) -> str:
        return storage.join(self.root, "shards", f"shard-{index:05d}.h5")

    def group(self, index: int) -> str:
        return storage.join(self.root, "groups", f"group-{index:04d}.h5")

    @property
    def events(self) -> str:
        """All events of the run, shards in order."""
        return storage.join(self.root, "events.h5")

    # ---- shared by learning and inference (the contract of docs/likelihood-model.md)
    def dataset(self, name: str) -> str:
        """An events file the fit runs on, other than the run's own events (pseudo-data, an observed file)."""
        return storage.join(self.root, "datasets", f"{name}.h5")

    def likelihood(self, dataset: str, source: str) -> str:
        """Per-event likelihood arrays (`sbi_core.data.likelihood_arrays`) of a dataset; source exact|learned."""
        return storage.join(self.root, "likelihood", source, f"{dataset}.h5")

    def likelihood_part(self, dataset: str, source: str, batch: int) -> str:
        """One event batch of `likelihood(dataset, source)` (mapped evaluate tasks write these, then join)."""
        return storage.join(self.root, "likelihood", source, dataset, f"part-{batch:05d}.h5")

    # ---- learning: augmented samples (`sbi-core sample`, sbi_core.data.training_sets)
    def samples_manifest(self, method: str) -> str:
        """What `sbi-core sample --method M` wrote: heads, variations, network ids, files (written last)."""
        return storage.join(self.root, "samples", method, "manifest.json")

    def training_set(self, method: str, head: str, variation: str, split: str) -> str:
        """One split (train|val|test) of one (method, head, variation) sample set."""
        return storage.join(self.root, "samples", method, head, variation, f"{split}.h5")

    # ---- physics: LHE ingestion (`sbi-core ingest-lhe`)
    def ingest_part(self, file_index: int, part: int) -> str:
        """Part `part` of input file `file_index` (raw LHE weights): ingest-lhe writes these as it reads, then
        assembles them into `shard(file_index)` and removes them; a rerun resumes after the last one."""
        return storage.join(self.root, "ingest", f"shard-{file_index:05d}", f"part-{part:05d}.h5")

    # ---- learning: trained networks and ensembles (`sbi-core train`, `sbi-core ensemble`, sbi_core.ml)
    def network(self, network_id: str) -> str:
        """Directory of one trained network: checkpoint.pt, model.pt, history.json, result.json, export.npz."""
        return storage.join(self.root, "networks", network_id)

    def network_file(self, network_id: str, name: str) -> str:
        """One file of a network's directory (names in sbi_core.ml.train_step.NETWORK_FILES)."""
        return storage.join(self.root, "networks", network_id, name)

    def ensemble(self, method: str, head: str, variation: str) -> str:
        """An ensemble's members (ok and failed): written by `sbi-core ensemble`, read by load_ensemble."""
        return storage.join(self.root, "ensembles", method, head, f"{variation}.json")

    @property
    def ensembles_index(self) -> str:
        """Every ensemble of the run and the evaluate batching (written last by `sbi-core ensemble`)."""
        return storage.join(self.root, "ensembles", "index.json")

    # ---- learning: evaluation (`sbi-core evaluate`, sbi_core.ml.evaluate)
    def evaluation_batch(self, batch: int) -> str:
        """The ensembles' predictions (and exact targets) on one batch of the test sets (`evaluate --batch I`)."""
        return storage.join(self.root, "evaluation", "batches", f"batch-{batch:05d}.h5")

    @property
    def evaluation_fiducial(self) -> str:
        """Weight sums over the run's events the exact closure targets need (written by the first batch)."""
        return storage.join(self.root, "evaluation", "fiducial.json")

    @property
    def evaluation_metrics(self) -> str:
        """The report's figures as numbers (`evaluate --report`)."""
        return storage.join(self.root, "evaluation", "metrics.json")

    @property
    def evaluation_plots(self) -> str:
        """Directory of the report's PNG plots."""
        return storage.join(self.root, "evaluation", "plots")

    def evaluation_plot(self, name: str) -> str:
        """One PNG plot of the report, e.g. `roc`."""
        return storage.join(self.root, "evaluation", "plots", f"{name}.png")

    # ---- inference (sbi_core/inference): datasets, fit, Hessian blocks
    def dataset_info(self, name: str) -> str:
        """What `sbi-core dataset` built: the events file, per-event weights, cross sections, batches (JSON)."""
        return storage.join(self.root, "datasets", f"{name}.json")

    @property
    def inference(self) -> str:
        """Directory of the inference results (fit, Hessian, scans, limits, toys, report)."""
        return storage.join(self.root, "inference")

    @property
    def fit(self) -> str:
        """The global fit: best fit, errors, validity (`FitResult.to_json()` and provenance)."""
        return storage.join(self.root, "inference", "fit.json")

    def hessian_block(self, start: int, stop: int) -> str:
        """Rows [start, stop) of the NLL Hessian at the best fit (one mapped hessian task)."""
        return storage.join(self.root, "inference", "hessian", f"rows-{start:05d}-{stop:05d}.npz")

    @property
    def hessian(self) -> str:
        """Assembled Hessian, covariance, correlation, impacts (JSON; the matrices also in hessian.npz)."""
        return storage.join(self.root, "inference", "hessian.json")

    @property
    def hessian_arrays(self) -> str:
        """hessian, covariance, correlation as arrays (npz)."""
        return storage.join(self.root, "inference", "hessian.npz")

    # ---- inference statistics (sbi_core/inference: scan, limits, toys, report)
    def scan_block(self, start: int, stop: int) -> str:
        """Profile points [start, stop) of the scan grid, observed and expected (one mapped scan task)."""
        return storage.join(self.root, "inference", "scan", f"points-{start:06d}-{stop:06d}.json")

    @property
    def limits(self) -> str:
        """Intervals, contours (observed and expected) and CLs upper limits from the joined scan."""
        return storage.join(self.root, "inference", "limits.json")

    def toy_block(self, start: int, stop: int) -> str:
        """Toys [start, stop): each toy's fit and test statistics (one mapped toys task)."""
        return storage.join(self.root, "inference", "toys", f"toys-{start:07d}-{stop:07d}.json")

    def bootstrap_member(self, member: int) -> str:
        """One ensemble member's likelihood fitted alone: best fit and intervals (the method uncertainty)."""
        return storage.join(self.root, "inference", "bootstrap", f"member-{member:04d}.json")

    @property
    def results(self) -> str:
        """The report: best fit, errors, covariance, intervals, limits, toys, validity (results.json)."""
        return storage.join(self.root, "inference", "results.json")

    @property
    def plots(self) -> str:
        """Directory of the report's PNG plots."""
        return storage.join(self.root, "inference", "plots")

    def plot(self, name: str) -> str:
        """One report plot, `plots/<name>.png`."""
        return storage.join(self.root, "inference", "plots", f"{name}.png")
