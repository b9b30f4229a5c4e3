"""The operator console: web pages served by the daemon on its own listener."""
