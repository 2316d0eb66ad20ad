"""Run by the course's kernel as it starts (`make setup` registers the kernel with PYTHONSTARTUP set to this file),
before any cell: see helpers/quiet.py. It runs in the notebook's namespace, so it leaves no name behind."""

from helpers import quiet as _quiet

_quiet.install()
del _quiet
