"""hallujax: face hallucination in JAX/Flax.

Entry points: `python -m hallujax.train`, `python -m hallujax.evaluate`,
`python -m hallujax.benchmark`, `python -m hallujax.sample`.
"""

__version__ = "0.1.0"
