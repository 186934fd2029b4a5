"""The worker process: receive theta, compute coded partial derivatives block by block, hold
each until its deadline, send it (DESIGN.md "One model, two clocks")."""
