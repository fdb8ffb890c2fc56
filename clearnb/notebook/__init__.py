"""Reading a notebook without running it: the file, its kernel, its code fingerprint, and
what its ``parameters`` cell and ``task.connect`` calls declare."""
