"""The runtime model (spec/bcgc.md): seeded streams (one registry of their roots), cycle-time
distributions, runtime, the papers' system record, plans, codes, optimisers, the deadline
objective and the testbed layout of a plan. Of bcgc-sim it imports bcgc_sim.errors alone."""
