"""Entry point of a message analysis helper process (see prepare.py): `python -m
mailpair.store.prepare_helper FD`."""

import sys

from mailpair.store.prepare import serve

if __name__ == "__main__":
    serve(int(sys.argv[1]))
