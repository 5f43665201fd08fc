"""An SMTP server for provd's mail tests, built on aiosmtpd (PyPI).

Every accepted message is written to DIR as N.json (envelope, headers, plain-text body,
attachment names) with each attachment beside it as N-FILENAME, written whole before the
JSON appears. The first --refuse messages get `451 4.3.0` (a transient refusal) and are
counted in DIR/refused. With --user/--password, AUTH is required (over plain text: the
test server has no TLS) and a wrong login is refused with 535; with --echo, that refusal
repeats the login and password it was given, as some servers do.
"""

import argparse
import email
import json
import os
import signal
import threading
from email import policy

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Sink:
    def __init__(self, out, refuse):
        self.out = out
        self.refuse = refuse
        self.refused = 0
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        if self.refused < self.refuse:
            self.refused += 1
            write(os.path.join(self.out, "refused"), str(self.refused).encode())
            return "451 4.3.0 Try again later"
        self.n += 1
        msg = email.message_from_bytes(envelope.content, policy=policy.default)
        body = msg.get_body(preferencelist=("plain",))
        attachments = []
        for part in msg.iter_attachments():
            name = part.get_filename()
            data = part.get_payload(decode=True)
            write(os.path.join(self.out, f"{self.n}-{name}"), data)
            attachments.append({"filename": name, "content_type": part.get_content_type(), "size": len(data)})
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(msg["from"]),
            "to": str(msg["to"]),
            "subject": str(msg["subject"]),
            "body": body.get_content() if body is not None else "",
            "attachments": attachments,
            "login": login,
        }
        write(os.path.join(self.out, f"{self.n}.json"), json.dumps(record).encode())
        return "250 OK"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--refuse", type=int, default=0)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--echo", action="store_true")
    a = p.parse_args()

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == a.user
            and auth_data.password.decode() == a.password
        )
        if not ok and a.echo and isinstance(auth_data, LoginPassword):
            given = f"{auth_data.login.decode()} / {auth_data.password.decode()}"
            return AuthResult(success=False, handled=False,
                              message=f"535 5.7.8 authentication failed for credentials [ / {given}]")
        return AuthResult(success=ok, auth_data=auth_data if ok else None)

    kwargs = {}
    if a.user:
        kwargs = {"authenticator": authenticator, "auth_required": True, "auth_require_tls": False}
    c = Controller(Sink(a.dir, a.refuse), hostname="127.0.0.1", port=a.port, **kwargs)
    c.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    c.stop()


if __name__ == "__main__":
    main()
