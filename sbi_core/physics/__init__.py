"""Physics: simulators (with their exact likelihoods where they exist) and morphing.

- `registry.make_simulator(cfg)` builds the simulator a config names.
- `base.Simulator` is the protocol every simulator satisfies; `base.EventBatch` is what it returns.
- `morphing.Morphing` turns weights at the basis benchmarks into weights at any theta.
- `particles.Particles` holds final-state particles (pid, four-momenta) of many events;
  `detector.Detector` turns true particles into reconstructed ones (resolution, acceptance, efficiency);
  `observables.compute(names, particles)` evaluates named observables (m_ll, pt_l1, cos_theta_star, ...).
- `lhe_reader.open_lhe(uri)` streams Les Houches files; `lhe.LHESimulator` (simulator `lhe`) turns their
  events into the project's events (`sbi_core.data.ingest` writes them).
"""
