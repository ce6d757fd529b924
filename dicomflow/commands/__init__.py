"""Subcommands of the ``dicomflow`` CLI.

Each module here defines ``register(subparsers)``, which adds one or more subcommands whose
parser has ``func`` set to a callable taking the parsed ``argparse.Namespace`` and returning an
exit code. ``dicomflow.cli`` discovers the modules, so adding a command touches no other file.
"""
