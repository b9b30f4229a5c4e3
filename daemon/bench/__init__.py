"""Benchmarks that print figures (``socbridge bench``), each against a named peer run alongside."""
