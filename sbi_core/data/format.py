"""The HDF5 event file: layout, writer and inspection. Documented in docs/data-format.md.

The header is MadMiner 0.9.6's (`parameters`, `benchmarks`, `morphing`, `observables`, `nuisance_parameters`,
`sample_summary`, `samples/{observations,weights,sampling_benchmarks}`; strings are fixed-length
ASCII `S256`), so MadMiner's `SampleAugmenter` opens our files (tests/data/test_madminer.py); the MadMiner
pieces and what MadMiner cannot carry are in `sbi_core.data.madminer_layout`. Additions: `samples/latent`
(parton-level z for joint quantities at any theta), our nuisance kinds and sizes, observable descriptions and
provenance attributes on the root.

Every sample dataset is chunked by rows (`chunk_rows`, the same in every file of a run), compressed
(shuffle + gzip level 1) and checksummed per chunk (fletcher32); each also carries `raw_crc32`, a
CRC of its stored chunk bytes in order, which lets combine copy chunks without decoding them and
still refuse a corrupt input.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import h5py
import numpy as np

from sbi_core import __version__, storage
from sbi_core.data import madminer_layout as madminer
from sbi_core.errors import ShardError

if TYPE_CHECKING:
    from sbi_core.config import AnalysisConfig
    from sbi_core.physics.base import EventBatch, Simulator

log = logging.getLogger(__name__)
FORMAT_NAME = "sbi-events"
FORMAT_VERSION = 1
OBSERVATIONS = "samples/observations"
WEIGHTS = "samples/weights"
LATENT = "samples/latent"
SAMPLE_DATASETS = (OBSERVATIONS, WEIGHTS, LATENT)
FILTERS: dict[str, Any] = {"compression": "gzip", "compression_opts": 1, "shuffle": True, "fletcher32": True}
_STR = "S256"


def _ascii(names: list[str]) -> np.ndarray:
    return np.array([n.encode("ascii") for n in names], dtype=_STR)


def decode_names(ds: h5py.Dataset) -> list[str]:
    """Read an S256 name list back as str."""
    return [b.decode("ascii") for b in ds[()]]


def weight_columns(cfg: AnalysisConfig) -> list[str]:
    """Columns of samples/weights: the basis benchmarks, then `<nuisance>_up`, `<nuisance>_down` each."""
    cols = list(cfg.benchmark_names)
    for n in cfg.nuisance:
        cols += [f"{n.name}_up", f"{n.name}_down"]
    return cols


def write_header(
    f: h5py.File,
    cfg: AnalysisConfig,
    *,
    config_hash: str,
    morphing_components: np.ndarray,
    morphing_matrix: np.ndarray,
    latent_names: list[str],
    kind: str,
    chunk_rows: int,
    seed: int | None = None,
    shards: list[int] | None = None,
) -> None:
    """Write the analysis description (MadMiner groups) and provenance attributes."""
    npar = len(cfg.parameters)
    f.create_dataset("parameters/names", data=_ascii(cfg.parameter_names))
    f.create_dataset("parameters/val_ranges", data=np.array([p.range for p in cfg.parameters], dtype=np.float64))
    f.create_dataset("parameters/max_power", data=np.asarray(cfg.max_powers, dtype=np.int64).reshape(npar))
    f.create_dataset("parameters/lha_blocks", data=_ascii([""] * npar))
    f.create_dataset("parameters/lha_ids", data=np.zeros(npar, dtype=np.int64))
    f.create_dataset("parameters/transforms", data=_ascii([madminer.EMPTY_EXPR] * npar))
    f.create_dataset(
        "parameters/true_values",
        data=np.array([np.nan if p.true_value is None else p.true_value for p in cfg.parameters]),
    )

    sampling = cfg.benchmark_names.index(cfg.sampling_benchmark)
    basis = np.array(cfg.benchmark_matrix(), dtype=np.float64).reshape(len(cfg.benchmarks), npar)
    names = weight_columns(cfg)
    values = np.vstack([basis] + [basis[sampling]] * (2 * len(cfg.nuisance)))
    f.create_dataset("benchmarks/names", data=_ascii(names))
    f.create_dataset("benchmarks/values", data=values)
    f.create_dataset("benchmarks/is_nuisance", data=np.array([i >= len(basis) for i in range(len(names))]))
    f.create_dataset("benchmarks/is_reference", data=np.array([i == sampling for i in range(len(names))]))

    f.create_dataset("morphing/components", data=np.asarray(morphing_components, dtype=np.int64))
    f.create_dataset("morphing/morphing_matrix", data=np.asarray(morphing_matrix, dtype=np.float64))

    f.create_dataset("observables/names", data=_ascii(cfg.observable_names))
    f.create_dataset("observables/definitions", data=_ascii(madminer.observable_definitions(cfg)))
    f.create_dataset("observables/descriptions", data=_ascii([o.description for o in cfg.observables]))
    f.create_dataset("latent/names", data=_ascii(latent_names))

    nn = [n.name for n in cfg.nuisance]
    f.create_dataset("nuisance_parameters/names", data=_ascii(nn))
    f.create_dataset("nuisance_parameters/kinds", data=_ascii([str(n.kind) for n in cfg.nuisance]))
    f.create_dataset("nuisance_parameters/sizes", data=np.array([n.size for n in cfg.nuisance], dtype=np.float64))
    f.create_dataset("nuisance_parameters/benchmark_positive", data=_ascii([f"{n}_up" for n in nn]))
    f.create_dataset("nuisance_parameters/benchmark_negative", data=_ascii([f"{n}_down" for n in nn]))
    # each its own systematic; no `systematics/*` group: MadMiner 0.9.6 cannot read ours back (madminer_layout)
    f.create_dataset("nuisance_parameters/systematics", data=_ascii(nn))

    attrs = f.attrs
    attrs["format"] = FORMAT_NAME
    attrs["format_version"] = FORMAT_VERSION
    attrs["kind"] = kind
    attrs["config_hash"] = config_hash
    attrs["analysis"] = cfg.name
    attrs["simulator"] = cfg.simulator.name
    attrs["sampling_benchmark"] = cfg.sampling_benchmark
    if cfg.generation.sampling_point is not None:  # events drawn off the benchmarks (active learning)
        attrs["sampling_point"] = np.asarray(cfg.sampling_theta(), dtype=np.float64)
    attrs["package_version"] = __version__
    attrs["chunk_rows"] = chunk_rows
    attrs["seed"] = -1 if seed is None else seed
    attrs["shards"] = np.asarray(shards if shards is not None else [], dtype=np.int64)
    attrs["shard_index"] = shards[0] if shards is not None and len(shards) == 1 else -1


def simulator_header(cfg: AnalysisConfig, sim: Simulator) -> dict[str, Any]:
    """The header fields a simulator determines: morphing components and matrix, latent names."""
    from sbi_core.physics.morphing import Morphing

    morphing = Morphing(sim.morphing_powers, np.array(cfg.benchmark_matrix(), dtype=np.float64))
    return {
        "morphing_components": sim.morphing_powers,
        "morphing_matrix": morphing.matrix,
        "latent_names": sim.latent_names,
    }


def copy_header(src: h5py.File, dst: h5py.File) -> None:
    """Copy every non-sample group and the root attributes (combine keeps the shards' header); the sample
    summary, which counts the samples, is written again by `seal`."""
    for name in src:
        if name not in ("samples", "sample_summary"):
            src.copy(src[name], dst, name=name)
    for key, val in src.attrs.items():
        dst.attrs[key] = val


def create_sample_datasets(f: h5py.File, widths: dict[str, int], n_rows: int | None, chunk_rows: int) -> None:
    """Create the chunked, compressed sample datasets (fixed size when n_rows is known, else growable)."""
    for name in SAMPLE_DATASETS:
        k = widths[name]
        shape = (n_rows, k) if n_rows is not None else (0, k)
        f.create_dataset(
            name,
            shape=shape,
            # Fixed size where HDF5 allows it (not below one chunk): a fixed-array chunk index, one block
            # allocated early, which lets storage.atomic_stream upload the file as it is written.
            maxshape=shape if n_rows is not None and n_rows >= chunk_rows else (None, k),
            dtype=np.float64,
            chunks=(chunk_rows, k),
            track_times=False,
            **FILTERS,
        )


def dataset_raw_chunks(ds: h5py.Dataset) -> Iterator[tuple[int, int, bytes]]:
    """(first row, filter mask, stored bytes) of each chunk, in row order."""
    rows = ds.chunks[0]
    for start in range(0, ds.shape[0], rows):
        mask, data = ds.id.read_direct_chunk((start, 0))
        yield start, mask, data


def raw_crc32(ds: h5py.Dataset) -> int:
    """CRC32 over the stored chunk bytes in order (what `raw_crc32` attributes hold). A file being streamed to
    an object store (`storage.atomic_stream`) answers from the CRCs it recorded as the chunks were written:
    their bytes are no longer local."""
    stream = storage.open_stream(ds.file.filename)
    if stream is not None:
        extents: list[tuple[tuple[int, ...], int, int]] = []
        ds.id.chunk_iter(lambda info: extents.append((info.chunk_offset, info.byte_offset, info.size)))
        recorded = stream.crc32_of([(offset, size) for _, offset, size in sorted(extents)])
        if recorded is not None:
            return int(recorded)
    crc = 0
    for _, _, data in dataset_raw_chunks(ds):
        crc = zlib.crc32(data, crc)
    return crc


def madminer_gaps_of(f: h5py.File) -> list[str]:
    """What MadMiner 0.9.6 cannot use of a file with this header (`madminer_layout.madminer_gaps`)."""
    return madminer.madminer_gaps(decode_names(f["nuisance_parameters/kinds"]),
                                  decode_names(f["nuisance_parameters/names"]),
                                  decode_names(f["observables/definitions"]))


def seal(f: h5py.File, n_generated: int) -> None:
    """Record counts and per-dataset raw CRCs, and MadMiner's sample summary; call last, after every sample is
    written and flushed. What MadMiner cannot use is said once per run by configure (`madminer_gaps_of`)."""
    f.flush()
    for name in SAMPLE_DATASETS:
        f[name].attrs["raw_crc32"] = raw_crc32(f[name])
    n = int(f[OBSERVATIONS].shape[0])
    madminer.write_sample_summary(f, n, str(f.attrs["sampling_benchmark"]))
    gaps = madminer_gaps_of(f)
    if gaps:  # configure says it once per run (a warning); every file repeats it at debug level only
        log.debug("event file for MadMiner 0.9.6: %s (docs/data-format.md)", "; ".join(gaps))
    f.attrs["n_events"] = n
    f.attrs["n_generated"] = int(n_generated)


class EventFileWriter:
    """Append EventBatches to a new event file at a local path or file object (storage.atomic_stream's)."""

    def __init__(
        self,
        path: Path | BinaryIO,
        cfg: AnalysisConfig,
        *,
        chunk_rows: int,
        widths: dict[str, int],
        n_rows: int,
        header: dict[str, Any],
    ) -> None:
        self._f = h5py.File(path, "w", libver=("v110", "latest"))
        write_header(self._f, cfg, chunk_rows=chunk_rows, **header)
        create_sample_datasets(self._f, widths, n_rows, chunk_rows)
        self._n = 0
        self._n_rows = n_rows
        self._nuis = len(cfg.nuisance)
        self._sampling = cfg.benchmark_names.index(cfg.sampling_benchmark)

    def append(self, batch: EventBatch, weight_scale: float) -> None:
        """Write the batch's rows; weights are multiplied by weight_scale (1 / events generated)."""
        n = len(batch)
        if self._n + n > self._n_rows:
            raise ValueError(f"writer: {self._n + n} rows exceed the planned {self._n_rows}")
        w = batch.weights * weight_scale
        nuis = (w[:, self._sampling, None, None] * batch.nuisance_weights).reshape(n, 2 * self._nuis)
        sl = slice(self._n, self._n + n)
        self._f[OBSERVATIONS][sl] = batch.observations
        self._f[WEIGHTS][sl] = np.hstack([w, nuis])
        self._f[LATENT][sl] = batch.latent
        self._n += n

    def close(self, n_generated: int) -> None:
        """Seal and close; refuses to close a file with fewer rows than planned."""
        if self._n != self._n_rows:
            raise ValueError(f"writer: wrote {self._n} of {self._n_rows} planned rows")
        seal(self._f, n_generated)
        self._f.close()


@dataclass(frozen=True)
class EventFileInfo:
    """What inspect_event_file learned about one file."""

    uri: str
    n_events: int
    n_generated: int
    config_hash: str
    chunk_rows: int
    shards: list[int]
    widths: dict[str, int]


def inspect_event_file(
    source: Path | str | BinaryIO, uri: str, *, config_hash: str | None = None, expected_events: int | None = None
) -> EventFileInfo:
    """Check one event file's header (cheap: no sample is decoded); ShardError naming uri otherwise.

    source is a local path or a binary file object (a remote file read in place)."""
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.exists():
            raise ShardError(uri, "missing")
        size = path.stat().st_size
    else:
        path = source
        size = source.seek(0, 2)
        source.seek(0)
    if size == 0:
        raise ShardError(uri, "empty file (0 bytes)")
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            if attrs.get("format") != FORMAT_NAME:
                raise ShardError(uri, f"not an {FORMAT_NAME} file (format attribute {attrs.get('format')!r})")
            if int(attrs.get("format_version", -1)) != FORMAT_VERSION:
                raise ShardError(uri, f"format_version {attrs.get('format_version')} != {FORMAT_VERSION}")
            if "n_events" not in attrs:
                raise ShardError(uri, "unsealed (no n_events attribute): the write did not finish")
            n = int(attrs["n_events"])
            widths = {}
            for name in SAMPLE_DATASETS:
                if name not in f:
                    raise ShardError(uri, f"dataset {name} missing")
                ds = f[name]
                if ds.shape[0] != n:
                    raise ShardError(uri, f"{name} has {ds.shape[0]} rows, header records {n}")
                if "raw_crc32" not in ds.attrs:
                    raise ShardError(uri, f"{name} has no raw_crc32 attribute")
                widths[name] = int(ds.shape[1])
    except ShardError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise ShardError(uri, f"unreadable or truncated HDF5 ({exc})") from None
    if n == 0:
        raise ShardError(uri, "holds no events")
    if config_hash is not None and attrs["config_hash"] != config_hash:
        raise ShardError(uri, f"foreign: config hash {str(attrs['config_hash'])[:12]} != run's {config_hash[:12]}")
    if expected_events is not None and n != expected_events:
        raise ShardError(uri, f"holds {n} events, the plan records {expected_events}")
    return EventFileInfo(
        uri=uri,
        n_events=n,
        n_generated=int(attrs.get("n_generated", n)),
        config_hash=str(attrs["config_hash"]),
        chunk_rows=int(attrs["chunk_rows"]),
        shards=[int(s) for s in attrs["shards"]],
        widths=widths,
    )


def verify_complete(path: Path | str | BinaryIO, uri: str, *, config_hash: str, expected_events: int) -> EventFileInfo:
    """inspect_event_file plus a CRC check of every stored chunk and the package version: the file is
    exactly what this package would write now (generate uses it to skip finished shards on a retry)."""
    info = inspect_event_file(path, uri, config_hash=config_hash, expected_events=expected_events)
    with h5py.File(path, "r") as f:
        if f.attrs.get("package_version") != __version__:
            raise ShardError(uri, f"written by sbi_core {f.attrs.get('package_version')}, this is {__version__}")
        for name in SAMPLE_DATASETS:
            if raw_crc32(f[name]) != int(f[name].attrs["raw_crc32"]):
                raise ShardError(uri, f"corrupt: {name} chunk bytes do not match their recorded CRC")
    return info


def read_samples(path: Path | str, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
    """Rows [start, stop) of every sample dataset, keyed by dataset name (for tests and small files)."""
    with h5py.File(path, "r") as f:
        return {name: f[name][start:stop] for name in SAMPLE_DATASETS}
