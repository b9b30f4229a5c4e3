"""The audit's I/O edges: fetching both live APIs for ``--remote`` and appending ``--fix`` repairs.

The findings themselves are pure (:mod:`projections.audit`); this package
reads the remote tickets through the daemon's own clients and turns planned
repairs into decisions and commands on the log.
"""
