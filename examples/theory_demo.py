"""See the TRPO/PPO theory hold exactly on a random tabular MDP.

Prints, for random policy pairs, how eta(new) compares with the surrogate L and the TRPO lower bound
(and how loose the bound's constant is), the counterexample to the derivation notes' constant (docs/theory.md), and eta per
iteration of exact minorise-maximise, KL-constrained and clipped-surrogate policy improvement; saves
``bound.png`` and ``iterations.png`` (needs matplotlib).

    python examples/theory_demo.py --out theory_out      # same as: python -m fastppo.theory --out theory_out
"""

from fastppo.theory import main

if __name__ == "__main__":
    main()
