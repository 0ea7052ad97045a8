"""``python -m sqlitedos``: the command line."""

from sqlitedos.cli import main

if __name__ == '__main__':
    main()
