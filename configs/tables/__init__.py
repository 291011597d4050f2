"""Results tables for ``python -m hallujax.experiments TABLE``: one file per table, ``def table() -> Table``."""
