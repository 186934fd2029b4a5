"""The wire: the protocol both ends speak and how they move its frames on their sockets."""
