"""invdiff-example: a random-disc prior and Laplace noise, as a worked plugin example."""
