"""The worker process: receive theta, compute each unit of its protocol's job (a slot, a chunk),
hold it until its deadline, send it (DESIGN.md "One model, two clocks"); one loop
(workers/loop.py), one job per protocol."""
