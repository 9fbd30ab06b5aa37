"""`python -m hbacli` is `hba` (handy under torchrun: `torchrun ... -m hbacli evaluate ...`)."""

from .cli import main

main()
