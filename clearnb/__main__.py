"""``python -m clearnb``: the same as the ``clearnb`` command."""

from clearnb.cli import main

if __name__ == "__main__":
    main()
