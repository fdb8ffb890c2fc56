"""Where a step's kernel runs: here (the runner's pool), on an agent serving a queue, or on a
Dask cluster.

``base`` (the protocol), ``local`` (the kernel pool here), ``queue`` and ``agent`` (a queue
and the agents serving it), ``choice`` (the executor a user names), ``dask`` (the
controller's side of a Dask cluster), ``daskworker`` (the plugin and function on its
workers) and ``dasksettings`` (what the two Dask sides share).
"""
