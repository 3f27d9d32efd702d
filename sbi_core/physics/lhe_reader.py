"""Stream Les Houches event files (plain or gzip; MadGraph5_aMC@NLO, POWHEG, ...) in batches with `pylhe`.

What to use when:
- `open_lhe(uri)`: a context manager giving `LHEStream`: `stream.header` (cross section from `<init>`,
  beams, the reweighting ids of `<initrwgt>`) and `stream.read_batch(size, ...)` / `stream.batches(size, ...)`:
  `LHEBatch`es
  (final-state particles, nominal weights, reweighting weights by id) holding at most `size` events each.
  Memory is one batch, whatever the file size: pylhe parses the XML incrementally and clears each event.
- `LHEFormatError` (an InputError) names the file and the 1-based number of the event where reading
  failed: a malformed event, a truncated file (plain or gzip) or a broken XML stream. The batches before
  the failing event were already yielded, so a caller that wrote them keeps them.

pylhe reports a broken XML stream only as a RuntimeWarning and then ends the iteration as if the file had
ended; this module records that warning and raises instead, so a truncated file is never mistaken for a
short one.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import re
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from sbi_core import storage
from sbi_core.errors import InputError
from sbi_core.physics.particles import Particles

__all__ = ["LHEBatch", "LHEFormatError", "LHEHeader", "LHEStream", "open_lhe"]

_GZIP_MAGIC = b"\x1f\x8b"
_EVENT_TAG = re.compile(rb"<event[\s>]|</event>")
_READ_ERRORS = (EOFError, OSError, zlib.error, gzip.BadGzipFile)


class LHEFormatError(InputError):
    """An LHE file that cannot be read; names the file and, when known, the event (1-based)."""

    def __init__(self, uri: str, reason: str, event: int | None = None) -> None:
        self.uri = uri
        self.event = event
        where = f", event {event}" if event is not None else ""
        super().__init__(f"LHE file {uri}{where}: {reason}")


@dataclass(frozen=True)
class LHEHeader:
    """What the file's `<init>` and `<initrwgt>` blocks say."""

    uri: str
    cross_section: float  # pb, sum of XSECUP over the processes
    cross_section_error: float  # pb, errors added in quadrature
    process_ids: list[int]
    beam_ids: tuple[int, int]
    beam_energies: tuple[float, float]  # GeV
    weighting_strategy: int  # IDWTUP
    weight_ids: list[str]  # declared in <initrwgt>, file order (the order of <weights> entries)


@dataclass(frozen=True)
class LHEBatch:
    """Up to `size` consecutive events of a file.

    first_event: 0-based position of the batch's first event in the file.
    particles:   final-state (status 1) particles, `max_particles` slots.
    incoming:    the two incoming partons (status -1): pid (n, 2) int64 and p4 (n, 2, 4), file order.
    nominal:     (n,) XWGTUP, the event weight.
    weights:     (n, len(ids)) the event's reweighting weights for the requested ids, NaN where absent.
    scale:       (n,) SCALUP; process_id: (n,) IDPRUP.
    """

    first_event: int
    particles: Particles
    incoming: Particles
    nominal: np.ndarray
    weights: np.ndarray
    scale: np.ndarray
    process_id: np.ndarray

    def __len__(self) -> int:
        return int(self.nominal.shape[0])


def _open_binary(uri: str) -> BinaryIO:
    return storage.open_binary(uri, block_size=1 << 20)  # remote: S3 failures named, not taken for a bad file


class LHEStream:
    """An open LHE file: its header and a forward-only event iterator (see `open_lhe`)."""

    def __init__(self, uri: str, raw: BinaryIO) -> None:
        import pylhe

        self.uri = uri
        self._raw = raw
        head = raw.read(2)
        raw.seek(0)
        source: Any = gzip.GzipFile(fileobj=raw, mode="rb") if head == _GZIP_MAGIC else raw
        self._source = source
        self._read = 0  # events consumed from pylhe so far
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                lhe = pylhe.LHEFile.frombuffer(source)
            except _READ_ERRORS as exc:
                raise LHEFormatError(uri, f"unreadable or truncated before the first event ({exc})") from None
            except (ValueError, AttributeError, IndexError) as exc:
                raise LHEFormatError(uri, f"malformed header or <init> block ({exc})") from None
        problem = _parse_warning(caught)
        if problem:
            raise LHEFormatError(uri, f"malformed header or <init> block ({problem})")
        init = lhe.init
        info = init.initInfo
        procs = init.procInfo
        if not procs:
            raise LHEFormatError(uri, "the <init> block lists no process (no cross section)")
        ids: list[str] = []
        if lhe.header is not None:
            ids = list(lhe.header.initrwgt.list_weights_ids())
        self.header = LHEHeader(
            uri=uri,
            cross_section=float(sum(p.xSection for p in procs)),
            cross_section_error=float(np.sqrt(sum(p.error**2 for p in procs))),
            process_ids=[int(p.procId) for p in procs],
            beam_ids=(int(info.beamA), int(info.beamB)),
            beam_energies=(float(info.energyA), float(info.energyB)),
            weighting_strategy=int(info.weightingStrategy),
            weight_ids=ids,
        )
        self._events = iter(lhe.events)

    @property
    def events_read(self) -> int:
        """Events consumed from the file so far (skipped ones included)."""
        return self._read

    def skip(self, n: int) -> None:
        """Consume n events without converting them (a resumed ingest starts after its finished parts)."""
        for _ in self._pull(n, keep=False):
            pass

    def read_batch(self, size: int, *, weight_ids: Sequence[str], max_particles: int) -> LHEBatch | None:
        """The next (at most) `size` events, None at the end of the file."""
        if size < 1:
            raise ValueError(f"batch size must be >= 1, got {size}")
        first = self._read
        events = list(self._pull(size, keep=True))
        if not events:
            return None
        return self._convert(first, events, {w: j for j, w in enumerate(weight_ids)}, max_particles)

    def batches(self, size: int, *, weight_ids: Sequence[str], max_particles: int) -> Iterator[LHEBatch]:
        """Consecutive batches of at most `size` events until the file ends."""
        while (batch := self.read_batch(size, weight_ids=weight_ids, max_particles=max_particles)) is not None:
            yield batch
            if len(batch) < size:
                return

    def _pull(self, n: int, *, keep: bool) -> Iterator[Any]:
        """Up to n events from pylhe; LHEFormatError naming the event where the stream breaks."""
        got: list[Any] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                for _ in range(n):
                    try:
                        ev = next(self._events)
                    except StopIteration:
                        break
                    self._read += 1
                    if keep:
                        got.append(ev)
            except _READ_ERRORS as exc:
                raise LHEFormatError(self.uri, f"truncated or corrupt compressed stream ({exc})",
                                     self._read + 1) from None
            except (ValueError, IndexError, KeyError, AttributeError) as exc:
                raise LHEFormatError(self.uri, f"malformed event ({exc})", self._read + 1) from None
        problem = _parse_warning(caught)
        if problem:
            unclosed = _unclosed_event(self.uri)
            if unclosed is not None:
                raise LHEFormatError(self.uri, "<event> is never closed: the next <event> begins inside it", unclosed)
            raise LHEFormatError(self.uri, f"broken XML, the file is truncated or malformed ({problem})",
                                 self._read + 1)
        return iter(got)

    def _convert(self, first: int, events: list[Any], index: dict[str, int], max_particles: int) -> LHEBatch:
        n = len(events)
        pid = np.zeros((n, max_particles), dtype=np.int64)
        p4 = np.zeros((n, max_particles, 4))
        in_pid = np.zeros((n, 2), dtype=np.int64)
        in_p4 = np.zeros((n, 2, 4))
        nominal = np.empty(n)
        weights = np.full((n, len(index)), np.nan)
        scale = np.empty(n)
        proc = np.empty(n, dtype=np.int64)
        for i, ev in enumerate(events):
            info = ev.eventinfo
            number = first + i + 1
            if info.nparticles != len(ev.particles):
                raise LHEFormatError(self.uri, f"declares {info.nparticles} particles but lists {len(ev.particles)}",
                                     number)
            nominal[i] = info.weight
            scale[i] = info.scale
            proc[i] = info.pid
            j = k = 0
            for p in ev.particles:
                if p.status == 1:
                    if j == max_particles:
                        raise LHEFormatError(
                            self.uri, f"more than {max_particles} final-state particles: raise "
                            "simulator.options.max_particles", number)
                    pid[i, j] = p.id
                    p4[i, j] = (p.e, p.px, p.py, p.pz)
                    j += 1
                elif p.status == -1 and k < 2:
                    in_pid[i, k] = p.id
                    in_p4[i, k] = (p.e, p.px, p.py, p.pz)
                    k += 1
            for wid, value in ev.weights.items():
                col = index.get(wid)
                if col is not None:
                    weights[i, col] = value
        if not (np.all(np.isfinite(p4)) and np.all(np.isfinite(nominal))):
            bad = first + 1 + int(np.flatnonzero(~(np.isfinite(p4).all(axis=(1, 2)) & np.isfinite(nominal)))[0])
            raise LHEFormatError(self.uri, "non-finite momentum or weight", bad)
        return LHEBatch(first, Particles(pid, p4), Particles(in_pid, in_p4), nominal, weights, scale, proc)


def _unclosed_event(uri: str) -> int | None:
    """The 1-based number of the first `<event>` whose `</event>` never comes before the next `<event>` (the
    parser only notices at the end of the file): a second pass over the file, on the error path only."""
    raw = _open_binary(uri)
    with contextlib.closing(raw):
        head = raw.read(2)
        raw.seek(0)
        source: Any = gzip.GzipFile(fileobj=raw, mode="rb") if head == _GZIP_MAGIC else raw
        number, inside = 0, False
        try:
            for line in source:
                for tag in _EVENT_TAG.findall(line):
                    if tag == b"</event>":
                        inside = False
                    elif inside:
                        return number
                    else:
                        number, inside = number + 1, True
        except _READ_ERRORS:
            return None
    return None


def _parse_warning(caught: list[warnings.WarningMessage]) -> str | None:
    for w in caught:
        text = str(w.message)
        if text.startswith("Parse Error"):
            return text.removeprefix("Parse Error: ")
    return None


@contextlib.contextmanager
def open_lhe(uri: str) -> Iterator[LHEStream]:
    """Open an LHE file (local path or URI; gzip detected by its magic bytes) for streaming."""
    try:
        raw = _open_binary(uri)
    except FileNotFoundError:
        raise LHEFormatError(uri, "file not found") from None
    with contextlib.closing(raw):
        if isinstance(raw, io.TextIOBase):  # pragma: no cover - _open_binary always opens in binary mode
            raise TypeError("binary stream expected")
        yield LHEStream(uri, raw)
