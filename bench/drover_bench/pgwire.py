"""A minimal PostgreSQL client (protocol 3, simple query, trust auth only).

The benchmark polls targets every few milliseconds and commits a probe row
every 50 ms; a psql process per statement would cost more than the thing
measured. The clusters the benchmark starts use trust authentication on
127.0.0.1, so no password exchange is implemented.
"""

import socket
import struct


class PgError(Exception):
    """An ErrorResponse from the server, or a broken connection."""


class PgConn:
    def __init__(self, port, dbname, user="postgres", host="127.0.0.1", app="drover-bench", timeout=60):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")
        params = b""
        for k, v in (("user", user), ("database", dbname), ("application_name", app)):
            params += k.encode() + b"\0" + v.encode() + b"\0"
        params += b"\0"
        self.sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
        while True:
            kind, body = self._read()
            if kind == b"R":
                (code,) = struct.unpack("!i", body[:4])
                if code != 0:
                    raise PgError(f"server asks for authentication method {code}; only trust is supported")
            elif kind == b"E":
                raise PgError(_error_text(body))
            elif kind == b"Z":
                return

    def _read(self):
        head = self.rfile.read(5)
        if len(head) < 5:
            raise PgError("connection closed by the server")
        (length,) = struct.unpack("!i", head[1:])
        body = self.rfile.read(length - 4)
        return head[:1], body

    def query(self, sql):
        """Runs `sql` (one or more statements); returns the rows of the last
        result as tuples of str/None."""
        data = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", 4 + len(data)) + data)
        rows, error = [], None
        while True:
            kind, body = self._read()
            if kind == b"T":
                rows = []
            elif kind == b"D":
                rows.append(_data_row(body))
            elif kind == b"E":
                error = _error_text(body)
            elif kind == b"Z":
                if error:
                    raise PgError(error)
                return rows

    def value(self, sql):
        rows = self.query(sql)
        return rows[0][0] if rows else None

    def close(self):
        try:
            self.sock.sendall(b"X" + struct.pack("!i", 4))
        except OSError:
            pass
        self.rfile.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _data_row(body):
    (n,) = struct.unpack("!h", body[:2])
    pos, out = 2, []
    for _ in range(n):
        (length,) = struct.unpack("!i", body[pos : pos + 4])
        pos += 4
        if length < 0:
            out.append(None)
        else:
            out.append(body[pos : pos + length].decode())
            pos += length
    return tuple(out)


def _error_text(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[part[:1]] = part[1:].decode(errors="replace")
    return f"{fields.get(b'S', 'ERROR')}: {fields.get(b'M', '?')}"
