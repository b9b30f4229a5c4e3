"""Both desks simulated over real HTTP, the rehearsal pair (``socbridge sim all``) and the
harness the demo and scenario tests drive. Never imported by the running daemon."""
