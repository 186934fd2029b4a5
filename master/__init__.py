"""The master: decoder state machine, iteration loop, local cluster launcher."""
