#!/usr/bin/python3
"""A misbehaving QMP peer on a unix socket, for the daemon's failure paths.

  bad-qmp.py SOCKET garbage   greeting, then binary junk and broken JSON for every command
  bad-qmp.py SOCKET hang      accept, then never say anything
  bad-qmp.py SOCKET close     send half a greeting and hang up
Every connection is served the same way, so reconnects meet the same peer. Each accepted
connection appends a line to SOCKET.connections, for tests that wait for reconnects.
"""
import os
import socket
import sys
import threading

GREETING = b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}\r\n'
JUNK = (b'\x00\xff\xfe{"return": [[[}\r\n'
        b'{"event": "BALLOON_CHANGE", "data": {"actual": "not a number"}}\r\n'
        b'{"return": {}, "id": 18446744073709551616}\r\n' + b'{' * 4096 + b'\r\n'
        b'}}}}\r\n' + bytes(range(256)) + b'\r\n')


def serve(conn, mode):
    with conn:
        if mode == "hang":
            conn.recv(1)  # until the daemon gives up and closes
            return
        if mode == "close":
            conn.sendall(GREETING[:20])
            return
        conn.sendall(GREETING)
        while True:
            data = conn.recv(65536)
            if not data:
                return
            try:
                conn.sendall(JUNK)
            except OSError:
                return


def main():
    path, mode = sys.argv[1], sys.argv[2]
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    while True:
        conn, _ = srv.accept()
        with open(path + ".connections", "a") as f:
            f.write("accepted\n")
        threading.Thread(target=serve, args=(conn, mode), daemon=True).start()


if __name__ == "__main__":
    main()
