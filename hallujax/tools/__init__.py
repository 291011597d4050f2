"""Command-line tools that are not the design card's entry points: benchmarks, figures, data checks."""
