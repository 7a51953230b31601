"""A stand-in for the cirrus binary, used only by test_harness_selfcheck.py to exercise the
Broker helper (start / readiness / stop / kill -9 / restart) without the real broker.

It speaks just enough: GET /livez -> 200 "ok" on --metrics-listen, and ApiVersions v0 on
--kafka-listen. SIGTERM -> exit 0. It writes <data-dir>/wal/fake.wal so restarts can be seen.
"""

import argparse
import http.server
import os
import signal
import socket
import socketserver
import struct
import sys
import threading


def hostport(s):
    h, p = s.rsplit(":", 1)
    return h, int(p)


class Livez(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok" if self.path == "/livez" else b"not found"
        self.send_response(200 if self.path == "/livez" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class Kafka(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        while True:
            hdr = s.recv(4, socket.MSG_WAITALL)
            if len(hdr) < 4:
                return
            (n,) = struct.unpack(">i", hdr)
            if n < 8 or n > 1 << 20:
                return
            req = s.recv(n, socket.MSG_WAITALL)
            api_key, _ver, corr = struct.unpack(">hhi", req[:8])
            if api_key != 18:
                return
            body = struct.pack(">ihi", corr, 0, 1) + struct.pack(">hhh", 18, 0, 0)
            s.sendall(struct.pack(">i", len(body)) + body)


class TS(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kafka-listen", default="127.0.0.1:9092")
    ap.add_argument("--metrics-listen", default="127.0.0.1:9644")
    ap.add_argument("--data-dir", default="./cirrus-data")
    ap.add_argument("--exit-code-on-term", type=int, default=0)
    args, _unknown = ap.parse_known_args()
    os.makedirs(os.path.join(args.data_dir, "wal"), exist_ok=True)
    with open(os.path.join(args.data_dir, "wal", "fake.wal"), "a") as f:
        f.write("start\n")
    kafka = TS(hostport(args.kafka_listen), Kafka)
    http_srv = http.server.ThreadingHTTPServer(hostport(args.metrics_listen), Livez)
    for srv in (kafka, http_srv):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    print("fake cirrus ready", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    print("fake cirrus stopping", flush=True)
    sys.exit(args.exit_code_on_term)


if __name__ == "__main__":
    main()
