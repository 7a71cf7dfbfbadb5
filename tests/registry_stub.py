"""A stand-in for a Confluent-compatible schema registry, for tests: the two calls of its REST
API the product makes, on a free port of 127.0.0.1, schemas in memory.

No real registry runs on this machine (docs/avro.md, "Schema registry"); this answers as
Confluent's and Apicurio's ``/apis/ccompat/v7`` do for these calls, nothing more.
"""

from __future__ import annotations

import http.server
import json
import threading
import time


class RegistryStub:
  """Confluent's GET /schemas/ids/<id> and POST /subjects/<subject>/versions, in memory;
  ``requests`` counts the GETs, ``delay_s`` slows every answer."""

  def __init__(self):
    self.schemas: dict[int, dict] = {}
    self.requests = 0
    self.delay_s = 0.0
    registry = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def log_message(self, *args):
        pass

      def _answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/vnd.schemaregistry.v1+json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

      def do_GET(self):
        registry.requests += 1
        time.sleep(registry.delay_s)
        schema_id = self.path.rsplit('/', 1)[-1]
        found = registry.schemas.get(int(schema_id)) if schema_id.isdigit() else None
        if found is None:
          self._answer(404, {'error_code': 40403, 'message': 'Schema not found'})
        else:
          self._answer(200, found)

      def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
        self._answer(200, {'id': registry.add(body['schema'])})

    self._server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self._server.server_address[1]}'
    threading.Thread(target=self._server.serve_forever, daemon=True).start()

  def add(self, schema_text, **extra) -> int:
    for schema_id, known in self.schemas.items():
      if known['schema'] == schema_text and not extra:
        return schema_id
    schema_id = len(self.schemas) + 1
    self.schemas[schema_id] = {'schema': schema_text, **extra}
    return schema_id

  def close(self):
    self._server.shutdown()
    self._server.server_close()
