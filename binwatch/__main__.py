"""`python -m binwatch …` is the `binwatch` command."""

from binwatch.cli import main

main()
