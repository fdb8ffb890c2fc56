"""Where a step's kernel runs: here (the runner's pool), or on an agent serving a queue."""
