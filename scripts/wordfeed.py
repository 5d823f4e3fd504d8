#!/usr/bin/env python3
"""Feeds newline-separated text to one TCP client, for `sluice bench wordcount`.

usage: scripts/wordfeed.py [--port 9999] [--words 30000000] [--vocab 10000]

Listens on 127.0.0.1:PORT, waits for a client, sends WORDS words (10 per line, drawn
deterministically from VOCAB distinct words) as fast as the socket takes them, then
keeps the connection open (idle) until the client closes it, and exits. Prints the
bytes and words sent and the seconds it took to stderr.
"""
import argparse
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=9999)
    ap.add_argument("--words", type=int, default=30_000_000)
    ap.add_argument("--vocab", type=int, default=10_000)
    a = ap.parse_args()
    vocab = [f"w{i}" for i in range(a.vocab)]
    # One chunk of 100,000 words (10,000 lines), repeated.
    words_per_chunk = 100_000
    lines = []
    for ln in range(words_per_chunk // 10):
        lines.append(" ".join(vocab[(ln * 7919 + k * 104729) % a.vocab] for k in range(10)))
    chunk = ("\n".join(lines) + "\n").encode()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", a.port))
    srv.listen(1)
    print(f"wordfeed: listening on 127.0.0.1:{a.port}", file=sys.stderr, flush=True)
    conn, _ = srv.accept()
    t = time.time()
    sent = 0
    while sent < a.words:
        conn.sendall(chunk)
        sent += words_per_chunk
    took = time.time() - t
    print(f"wordfeed: sent {sent} words ({sent // words_per_chunk * len(chunk)} bytes) in {took:.2f} s",
          file=sys.stderr, flush=True)
    conn.settimeout(120)
    try:
        while conn.recv(1 << 16):
            pass
    except OSError:
        pass
    conn.close()
    srv.close()


if __name__ == "__main__":
    main()
