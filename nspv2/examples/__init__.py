"""Example providers shipped with nspv2 (see :mod:`nspv2.examples.email`)."""
