"""`python -m ckptlint`."""

from ckptlint.cli import main

raise SystemExit(main())
