"""A deliberately injectable upstream for benches/sqlmap.sh: GET /items?id=N looks an item up
in SQLite by pasting `id` into the SQL text (the bug sqlmap hunts for), and answers the
database's error text when the SQL does not parse (error-based injection works too).
GET /__count answers how many requests reached it. Loopback only."""
import sqlite3
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

DB = sqlite3.connect(":memory:", check_same_thread=False)
DB.execute("CREATE TABLE items (id INTEGER, name TEXT, secret TEXT)")
DB.executemany(
    "INSERT INTO items VALUES (?, ?, ?)",
    [(i, f"item {i}", f"secret-{i * 7919}") for i in range(1, 21)],
)
LOCK = threading.Lock()
COUNT = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        global COUNT
        url = urlsplit(self.path)
        if url.path == "/__count":
            return self.answer(200, str(COUNT))
        with LOCK:
            COUNT += 1
        item = parse_qs(url.query).get("id", ["1"])[0]
        sql = f"SELECT name FROM items WHERE id = '{item}'"
        try:
            with LOCK:
                rows = DB.execute(sql).fetchall()
        except Exception as e:  # the error text, as careless applications show it
            return self.answer(500, f"<html><body>database error: {e}</body></html>")
        names = "".join(f"<li>{r[0]}</li>" for r in rows)
        self.answer(200, f"<html><body><ul>{names}</ul></body></html>")


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
