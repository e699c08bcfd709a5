"""invdiff-example: a random-disc prior, a block-average forward model, Laplace noise and a
probability-flow Euler sampler, as a worked plugin example."""
