"""Event data: the HDF5 format, the generation plan, sharded generation and the map-reduce combine."""
