"""Real SMTP servers (aiosmtpd) for the email notification test, all on loopback port 0.

Usage: server.py CERT KEY USER PASSWORD

Serves four servers and prints their ports as one line, `PORTS plain starttls implicit notls`:
- plain: no TLS, no AUTH;
- starttls: offers STARTTLS with CERT/KEY and AUTH (PLAIN, LOGIN) only after it, and refuses
  mail before STARTTLS and AUTH;
- implicit: TLS from the first byte with CERT/KEY, AUTH required;
- notls: no STARTTLS.
AUTH accepts only USER/PASSWORD. Each accepted message is then printed as one JSON line:
{"server", "from", "to", "tls", "login", "data"}. Runs until stdin closes.
"""

import asyncio
import json
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def main():
    cert, key, user, password = sys.argv[1:5]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, auth_data=auth_data)

    class Handler:
        def __init__(self, name):
            self.name = name

        async def handle_DATA(self, server, session, envelope):
            auth = session.auth_data
            print(
                json.dumps(
                    {
                        "server": self.name,
                        "from": envelope.mail_from,
                        "to": envelope.rcpt_tos,
                        "tls": server.transport.get_extra_info("sslcontext") is not None,
                        "login": auth.login.decode()
                        if isinstance(auth, LoginPassword)
                        else None,
                        "data": envelope.content.decode("utf-8", "replace"),
                    }
                ),
                flush=True,
            )
            return "250 OK"

    servers = {
        "plain": ({}, None),
        "starttls": (
            {
                "tls_context": ctx,
                "require_starttls": True,
                "authenticator": authenticator,
                "auth_require_tls": True,
                "auth_required": True,
            },
            None,
        ),
        # The connection is TLS from the start: AUTH needs no STARTTLS first.
        "implicit": (
            {
                "authenticator": authenticator,
                "auth_require_tls": False,
                "auth_required": True,
            },
            ctx,
        ),
        "notls": ({}, None),
    }

    async def run():
        loop = asyncio.get_running_loop()
        ports = []
        for name, (kwargs, server_ssl) in servers.items():
            srv = await loop.create_server(
                lambda name=name, kwargs=kwargs: SMTP(Handler(name), **kwargs),
                host="127.0.0.1",
                port=0,
                ssl=server_ssl,
            )
            ports.append(str(srv.sockets[0].getsockname()[1]))
        print("PORTS " + " ".join(ports), flush=True)
        # Until the test closes stdin.
        await loop.run_in_executor(None, sys.stdin.read)

    asyncio.run(run())


if __name__ == "__main__":
    main()
