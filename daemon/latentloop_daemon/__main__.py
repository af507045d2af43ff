"""`python -m latentloop_daemon` runs the `latentloop` command."""

from latentloop_daemon.cli import main

raise SystemExit(main())
