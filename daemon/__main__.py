"""``python -m daemon`` runs the socbridge command line."""

import sys

from daemon.cli.main import main

sys.exit(main())
