"""`python -m ckptlint`."""

from ckptlint.commands.cli import main

raise SystemExit(main())
