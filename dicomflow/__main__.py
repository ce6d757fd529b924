"""`python -m dicomflow ...`: the same as the `dicomflow` command."""

import sys

from .cli import main

sys.exit(main())
