"""The read model folded from the event log: state, fold, persistence, replay and audit."""
