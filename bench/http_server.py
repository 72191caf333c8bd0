#!/usr/bin/env python3
"""A small HTTP server for bench/run_overhead.sh.

Listens on 127.0.0.1 only, on a free port that it writes to the file named
by --port-file, and responds to every GET, POST, PUT, PATCH and DELETE
with 200 and a short JSON body. Python standard library only.
"""

import argparse
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b'{"status":"ok"}'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Small writes go out at once instead of waiting for an acknowledgement.
    disable_nagle_algorithm = True

    def respond(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        head = (
            "HTTP/1.1 200 OK\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(BODY)}\r\n"
            "\r\n"
        ).encode("ascii")
        # A single write for the whole response.
        self.wfile.write(head + BODY)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = respond

    def log_message(self, format, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    temporary = args.port_file + ".tmp"
    with open(temporary, "w") as file:
        file.write(str(server.server_address[1]))
    os.replace(temporary, args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
