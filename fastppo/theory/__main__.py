"""``python -m fastppo.theory --out DIR [--seed N] [--pairs N] [--iters N]``: runs the demo."""

from fastppo.theory.demo import main

main()
