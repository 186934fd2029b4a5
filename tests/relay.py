"""A loopback TCP relay for fault tests: `python tests/relay.py TARGET_PORT` listens on a free
127.0.0.1 port (printed on stdout), forwards every connection to 127.0.0.1:TARGET_PORT, and on
SIGUSR1 drops every connection it relays (both ends closed at once, as a network drop would).
SIGSTOP freezes it: connections stay open at both ends (the kernel still acknowledges bytes and
new connections) but nothing passes, as with a half-open connection or a frozen host."""

from __future__ import annotations

import selectors
import signal
import socket
import sys


def relay(target_port: int) -> None:
    selector = selectors.DefaultSelector()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    selector.register(listener, selectors.EVENT_READ)
    pairs: dict[socket.socket, socket.socket] = {}
    drops = []
    signal.signal(signal.SIGUSR1, lambda *_: drops.append(True))
    print(listener.getsockname()[1], flush=True)

    def close(sock: socket.socket) -> None:
        other = pairs.pop(sock, None)
        for s in (sock, other):
            if s is not None:
                pairs.pop(s, None)
                selector.unregister(s)
                s.close()

    while True:
        for key, _ in selector.select(0.05):
            sock = key.fileobj
            if sock is listener:
                client, _ = listener.accept()
                try:
                    upstream = socket.create_connection(("127.0.0.1", target_port))
                except OSError:  # the target is not up (yet): refuse, as it would
                    client.close()
                    continue
                for s in (client, upstream):
                    s.setblocking(True)  # sends complete; reads only when selected
                    selector.register(s, selectors.EVENT_READ)
                pairs[client], pairs[upstream] = upstream, client
                continue
            if sock not in pairs:
                continue
            try:
                data = sock.recv(1 << 16)
                if data:
                    pairs[sock].sendall(data)
                    continue
            except OSError:
                pass
            close(sock)
        if drops:
            drops.clear()
            for sock in list(pairs):
                if sock in pairs:
                    close(sock)


if __name__ == "__main__":
    relay(int(sys.argv[1]))
