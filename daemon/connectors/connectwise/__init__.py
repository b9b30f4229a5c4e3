"""The ConnectWise Manage side: REST 3.0 client, signed-callback intake, reconciliation
poller, callback install, connection validation. See README.md for what was verified
against ``../shared/reference/connectwise/``."""
