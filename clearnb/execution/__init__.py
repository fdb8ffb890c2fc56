"""Running ONE notebook: parameters, the kernel pool, the papermill engine, the runner."""
