"""Running ONE notebook: the kernel pool, the papermill engine, the runner, limits."""
