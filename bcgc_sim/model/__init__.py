"""The runtime model: stragglers, runtime, the system model, plans, codes, optimisers, deadlines,
the testbed layout of a plan. Imports nothing of the wire, master or workers."""
