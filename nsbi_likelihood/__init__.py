"""Read an `nsbi-likelihood` artefact and evaluate its likelihood: numpy alone, JAX optional.

An artefact (docs/likelihood-format.md) is one directory, or a .tar.gz of it, written by
`sbi-core export-likelihood`: a JSON description (`likelihood.json`), the per-event arrays of the measured
dataset and of the normalisation sample (`arrays/*.npz`), and, for a learned likelihood, the ratio networks'
weights (`networks/*.npz`). Nothing of the training stack (torch, h5py, sbi_core) is needed to read it.

What to use when:
- `load(path)` -> `Likelihood` (refuses a missing array, an unknown format version or a changed file,
  naming it: `FormatError`).
- `lik.nll(p)` / `lik.nll(theta=..., nu=...)`: NLL(theta, nu) on the artefact's dataset (the same number
  as the pipeline's fit, up to rounding); `lik.names` is the order of p (POIs, then nuisances).
- `lik.per_event(x, observables=...)` runs the exported networks (numpy forward pass) on new events and
  returns their per-event arrays; `lik.nll(p, events=x, observables=...)` is the NLL of those events.
- `lik.grad(p)`, `lik.hessian(p)`: exact with JAX installed (`backend="jax"`), else central finite
  differences; `lik.fit()` refits with a damped Newton method of this package (no scipy needed).
"""

from nsbi_likelihood.artefact import FORMAT_NAME, SUPPORTED_VERSIONS, Likelihood, load
from nsbi_likelihood.errors import FormatError

__all__ = ["FORMAT_NAME", "SUPPORTED_VERSIONS", "FormatError", "Likelihood", "load"]
__version__ = "1.0.0"
