"""The BCGC papers' numerical results (spec/bcgc.md §8): the authors' numbers and their
reproduction with bcgc_sim, run by scripts/reproduce_paper.py."""
