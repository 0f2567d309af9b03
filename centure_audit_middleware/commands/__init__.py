"""Subcommands of `centure-audit`: one module each, with `register(subparsers)` setting `handler=`."""
