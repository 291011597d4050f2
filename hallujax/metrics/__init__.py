"""Image-quality and face-verification metrics."""
