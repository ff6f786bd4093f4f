"""`python -m twostage` is the `twostage` command (and what torchrun launches)."""

from twostage.cli import main

raise SystemExit(main())
