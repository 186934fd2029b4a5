"""The partial-straggler model (spec/partial-gc.md): assignment and ordering, coding, the
master's decoder, timing, the original-GC baseline, and the plan the testbed runs. Of bcgc-sim
it imports the runtime model and bcgc_sim.errors alone."""
