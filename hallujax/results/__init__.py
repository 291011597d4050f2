"""Results tables (``python -m hallujax.experiments TABLE``): a table's declaration and runs (``table``), its
validity checks (``checks``), its statistics and report (``report``). The runner is ``hallujax.experiments``."""
