"""The running process: app wiring, configuration, reload, listener and TLS, guard, metrics,
logging, secrets and systemd notification."""
