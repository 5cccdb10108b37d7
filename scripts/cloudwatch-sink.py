#!/usr/bin/env python3
"""A CloudWatch endpoint for benchmarks: answers every PutMetricData (awsQuery) with success.

Prints its endpoint (http://127.0.0.1:PORT) on the first line of stdout, then one line per
call: the request's size in bytes. The publisher's correctness is tested against the decoding
endpoint in tests/src/cloudwatch.rs; this one only lets `kinesis-cat perf ... --cloudwatch-metrics`
upload somewhere local, so that the benchmarks measure the publisher's cost.
"""
import http.server
import sys

ANSWER = (
    b'<PutMetricDataResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/">'
    b"<ResponseMetadata><RequestId>bench</RequestId></ResponseMetadata>"
    b"</PutMetricDataResponse>"
)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        print(len(body), flush=True)
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    sys.exit(0)
