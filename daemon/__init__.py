"""The socbridge daemon and its tools: service, desk connectors, sync, outbox, CLI, simulators."""
