"""The wire: the protocol both ends speak, how they move its frames on their sockets, and the
shared-memory segments that carry bulk arrays between processes on one host."""
