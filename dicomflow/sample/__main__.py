"""``python -m dicomflow.sample DEST [--seed S]``: write the sample archive."""

from . import _main

_main()
