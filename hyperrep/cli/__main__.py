"""`python -m hyperrep.cli`: the `hyperrep` command."""

from hyperrep.cli import main

raise SystemExit(main())
