"""hallujax: face hallucination in JAX/Flax.

Entry points: `python -m hallujax.train`, `python -m hallujax.evaluate`,
`python -m hallujax.benchmark`, `python -m hallujax.sample`, `python -m hallujax.hallucinate`
(faces in photos), `python -m hallujax.export` and `python -m hallujax.demo`.
"""

__version__ = "0.1.0"
