"""The partial-straggler model (spec/partial-gc.md): assignment, decoders, timing, plan.
Imports nothing of the wire, master or workers."""
