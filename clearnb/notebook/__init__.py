"""Reading a notebook (or a Python script, read as one) without running it: the file, its
kernel, its code fingerprint, and what its ``parameters`` cell, ``task.connect`` calls and
argparse arguments declare."""
