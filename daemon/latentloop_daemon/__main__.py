"""`python -m latentloop_daemon` runs the `latentloop` command."""

from .cli import main

raise SystemExit(main())
