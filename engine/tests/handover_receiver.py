#!/usr/bin/env python3
"""Receives a socket handed over by netmend (netmend::handover), in Python.

Usage: handover_receiver.py PATH

Binds a Unix rendezvous at PATH (owner-only), prints "ready", takes one
handover, checks the sender is this user (SO_PEERCRED), reads the header
(wire format version 1, see the README), and for a TCP stream answers:

    python got kind=K tag=TAG state=HEX HEX... data=WHAT THE FAR END SENT

then closes. The engine's test `handover.rs` runs it.
"""
import os
import socket
import struct
import sys

HEADER = struct.Struct(">4sBBBBI19s19s")  # 50 bytes, big-endian


def recv_exact(conn, n):
    out = b""
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise EOFError("the sender closed mid-message")
        out += chunk
    return out


def main():
    path = sys.argv[1]
    rendezvous = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    rendezvous.bind(path)
    os.chmod(path, 0o600)
    rendezvous.listen(1)
    print("ready", flush=True)
    conn, _ = rendezvous.accept()
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    if uid != os.getuid():
        sys.exit(f"refused: uid {uid}")
    # The descriptor rides on the first byte; ask for room for more to see
    # (and refuse) a sender that passed several.
    data, fds, flags, _ = socket.recv_fds(conn, HEADER.size, 8)
    if flags & socket.MSG_CTRUNC or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        sys.exit(f"refused: {len(fds)} descriptors, flags {flags}")
    data += recv_exact(conn, HEADER.size - len(data))
    magic, version, kind, tag_len, reserved, state_len, _local, _peer = HEADER.unpack(data)
    if magic != b"NMHO" or version != 1 or reserved != 0:
        os.close(fds[0])
        sys.exit("refused: not a netmend handover v1")
    tag = recv_exact(conn, tag_len).decode()
    state = recv_exact(conn, state_len)
    if kind != 1:
        os.close(fds[0])
        sys.exit(f"this receiver takes TCP streams (kind 1), got {kind}")
    stream = socket.socket(fileno=fds[0])
    received = b""
    while True:
        chunk = stream.recv(65536)
        if not chunk:
            break
        received += chunk
    hexstate = state[:2].hex() + " " + state[2:].hex()
    stream.sendall(f"python got kind={kind} tag={tag} state={hexstate} data=".encode() + received)
    stream.close()


if __name__ == "__main__":
    main()
