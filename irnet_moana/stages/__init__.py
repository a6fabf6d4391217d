"""One module per pipeline stage, each with a ``run(cfg, ...)`` entry point (IRNet's layout)."""
