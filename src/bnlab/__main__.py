"""``python -m bnlab``: the same command line as the ``bnlab`` script."""

from bnlab.cli import main

if __name__ == "__main__":
    main()
