"""One module per paper's experiment, built only from the public pieces."""
