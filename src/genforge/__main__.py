"""``python -m genforge ...`` (and ``torchrun ... -m genforge train ...``): the ``genforge`` command."""

from genforge.cli import main

main()
