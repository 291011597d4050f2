"""Face data: sources (face world, TFDS, folders), degradations, alignment, grain pipelines."""
