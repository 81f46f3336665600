"""What users do with a pipeline: generate image files, manipulate images (variations,
interpolations, text diffs), probe the latent, and evaluate (evaluate/)."""
