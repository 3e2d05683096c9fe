"""Subcommands of `stride`, one module each (see stride.cli)."""
