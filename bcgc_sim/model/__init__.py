"""The runtime model (spec/bcgc.md): seeded streams (one registry of their roots), cycle-time
distributions, runtime, the papers' system record, plans, codes, optimisers, the deadline
objective and the testbed layout of a plan; the system model: costs (a machine's calibrated
prices), work (a plan's CPU per worker), machine (the plan run on shared
cores), sys_opt (bcgc-sys-opt). Of bcgc-sim it imports bcgc_sim.errors alone."""
