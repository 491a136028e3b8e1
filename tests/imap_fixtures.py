"""A throw-away Dovecot IMAP and POP3 server (TESTING.md) and helpers that fill it with corpus
messages."""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.peers import free_port, wait_port

PASSWORD = "secret-pass"
# Dovecot's greeting in the tests: no answer of ours may ever repeat it.
GREETING = "Dovecot ready, greeting-7c1e5d"
FOLDERS = {
    "Sent": "\\Sent",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Drafts": "\\Drafts",
    "Archive": "\\Archive",
}

_CONF = """\
protocols = imap pop3
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
ssl = {ssl}
{ssl_files}
disable_plaintext_auth = no
login_greeting = {greeting}
auth_mechanisms = plain login apop{oauth_mechanisms}
default_login_user = dovenull
default_internal_user = dovecot
mail_location = maildir:{base}/mail/%u
mail_uid = dovecot
mail_gid = dovecot
first_valid_uid = 1
mail_plugins = $mail_plugins
imap_capability = +SPECIAL-USE
# POP3 UIDLs from the IMAP UID and UIDVALIDITY: the same message keeps its UIDL.
pop3_uidl_format = %08Xu%08Xv
{oauth_passdb}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/passwd
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={base}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = {tls_port}
    {imaps_ssl}
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = {pop3s_port}
    {imaps_ssl}
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
namespace inbox {{
  inbox = yes
  separator = /
{mailboxes}
}}
{extra}
"""


class Dovecot:
    """`dovecot -c <conf>` on free ports; users from a passwd-file; SPECIAL-USE folders."""

    def __init__(
        self,
        users: Iterable[str] = ("alice@example.com", "bob@example.com"),
        *,
        tls: bool = False,
        spare_users: int = 0,
        extra_conf: str = "",
        oauth2_introspection_url: str | None = None,
    ) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="postroom-dovecot-"))
        self.port = free_port()
        self.tls_port = free_port() if tls else 0
        self.pop3_port = free_port()
        self.pop3_tls_port = free_port() if tls else 0
        self.users = list(users) + [f"user{i}@example.com" for i in range(spare_users)]
        self.next_user = len(list(users)) - 1
        self.tls = tls
        self._delivered = 0
        # Appended to the config: e.g. higher connection limits for many users (bench_push).
        self.extra_conf = extra_conf
        # Dovecot's oauth2 passdb asks this URL about every XOAUTH2/OAUTHBEARER token.
        self.oauth2_introspection_url = oauth2_introspection_url

    def start(self) -> Dovecot:
        binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
        if not Path(binary).exists():
            raise RuntimeError("Dovecot is missing: apt-get install -y dovecot-imapd")
        if not (Path(binary).parent.parent / "lib" / "dovecot" / "pop3").exists():
            raise RuntimeError("Dovecot's POP3 server is missing: apt-get install -y dovecot-pop3d")
        for sub in ("run", "state", "mail"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "passwd").write_text("".join(f"{u}:{{PLAIN}}{PASSWORD}\n" for u in self.users))
        ssl_files = ""
        if self.tls:
            self._make_cert()
            ssl_files = f"ssl_cert = <{self.base}/cert.pem\nssl_key = <{self.base}/key.pem"
        mailboxes = "\n".join(
            f'  mailbox "{name}" {{\n    auto = subscribe\n    special_use = {use}\n  }}'
            for name, use in FOLDERS.items()
        )
        self.conf = self.base / "dovecot.conf"
        self.conf.write_text(
            _CONF.format(
                base=self.base,
                port=self.port,
                tls_port=self.tls_port,
                pop3_port=self.pop3_port,
                greeting=GREETING,
                pop3s_port=self.pop3_tls_port,
                mailboxes=mailboxes,
                ssl="yes" if self.tls else "no",
                ssl_files=ssl_files,
                imaps_ssl="ssl = yes" if self.tls else "",
                extra=self.extra_conf,
                **self._oauth_conf(),
            )
        )
        dovecot = pwd.getpwnam("dovecot")
        for path in (self.base, self.base / "mail"):
            os.chown(path, dovecot.pw_uid, dovecot.pw_gid)
        self.base.chmod(0o755)
        subprocess.run([binary, "-c", str(self.conf)], check=True)
        wait_port(self.port)
        wait_port(self.pop3_port)
        return self

    def _oauth_conf(self) -> dict[str, str]:
        """TESTING.md "OAuth2": a first passdb that introspects every token, uncached."""
        if self.oauth2_introspection_url is None:
            return {"oauth_mechanisms": "", "oauth_passdb": ""}
        (self.base / "oauth2.conf.ext").write_text(
            "introspection_mode = post\n"
            f"introspection_url = {self.oauth2_introspection_url}\n"
            "username_attribute = username\n"
            "active_attribute = active\n"
            "active_value = true\n"
        )
        passdb = (
            "passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
            f"  args = {self.base}/oauth2.conf.ext\n}}"
        )
        return {"oauth_mechanisms": " xoauth2 oauthbearer", "oauth_passdb": passdb}

    def _make_cert(self) -> None:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                str(self.base / "key.pem"),
                "-out",
                str(self.base / "cert.pem"),
            ],
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        pid_file = self.base / "run" / "master.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().strip())
            try:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    os.kill(pid, 0)
                    time.sleep(0.05)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.base, ignore_errors=True)

    def credentials(self, user: str, *, security: str = "none") -> dict[str, object]:
        port = self.tls_port if security == "tls" else self.port
        return {
            "imap": {
                "host": "127.0.0.1",
                "port": port,
                "security": security,
                "username": user,
                "password": PASSWORD,
                "verify_tls": False,
            }
        }

    def pop3_credentials(self, user: str, *, security: str = "none") -> dict[str, object]:
        """The `pop3` part of an account's credential (and its body for the API)."""
        port = self.pop3_tls_port if security == "tls" else self.pop3_port
        return {
            "pop3": {
                "host": "127.0.0.1",
                "port": port,
                "security": security,
                "username": user,
                "password": PASSWORD,
                "verify_tls": False,
            }
        }

    def deliver(self, user: str, raw: bytes) -> Path:
        """Drop a message into the user's Maildir/new, as a local delivery agent would."""
        dovecot = pwd.getpwnam("dovecot")
        maildir = self.base / "mail" / user  # mail_location: INBOX is the Maildir root
        for path in (maildir, maildir / "new", maildir / "cur", maildir / "tmp"):
            path.mkdir(exist_ok=True)
            os.chown(path, dovecot.pw_uid, dovecot.pw_gid)
        self._delivered += 1
        name = f"{time.time():.6f}.P{os.getpid()}Q{self._delivered}.postroom-test"
        tmp = maildir / "tmp" / name
        tmp.write_bytes(raw)
        os.chown(tmp, dovecot.pw_uid, dovecot.pw_gid)
        target = maildir / "new" / name
        tmp.rename(target)
        return target

    def client(self, user: str) -> imaplib.IMAP4:
        """A separate, plain imaplib connection: 'another mail client' in the tests."""
        conn = imaplib.IMAP4("127.0.0.1", self.port)
        conn.login(user, PASSWORD)
        return conn

    def connections(self) -> dict[str, int]:
        """IMAP connections per user right now (`doveadm who`)."""
        out: dict[str, int] = {}
        for line in self.doveadm("who", "-1").splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2 and parts[1] == "imap":
                out[parts[0]] = out.get(parts[0], 0) + 1
        return out

    def doveadm(self, *args: str) -> str:
        proc = subprocess.run(
            ["doveadm", "-c", str(self.conf), *args], check=True, capture_output=True, text=True
        )
        return proc.stdout

    def set_uidvalidity(self, user: str, mailbox: str, value: int) -> None:
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(value), mailbox)

    def reset(self, user: str) -> None:
        """Empty every folder of `user` (and forget the UID history) between tests."""
        shutil.rmtree(self.base / "mail" / user, ignore_errors=True)


def append_many(
    conn: imaplib.IMAP4, mailbox: str, messages: Iterable[bytes], flags: str = ""
) -> int:
    n = 0
    for raw in messages:
        typ, data = conn.append(mailbox, flags or None, None, raw)
        assert typ == "OK", data
        n += 1
    return n


def fill_from_corpus(conn: imaplib.IMAP4, plan: dict[str, tuple[str, int]]) -> dict[str, int]:
    """Append corpus messages: {mailbox: (corpus folder, count)} -> {mailbox: count}."""
    from scripts.corpus import messages, raw_message

    out = {}
    for mailbox, (folder, count) in plan.items():
        paths = list(messages(folder))[:count]
        out[mailbox] = append_many(conn, mailbox, (raw_message(p) for p in paths))
    return out


def add_user(server: Dovecot) -> str:
    """An unused mailbox owner from the passwd-file (written once: Dovecot caches it)."""
    server.next_user += 1
    if server.next_user >= len(server.users):
        raise RuntimeError("the Dovecot fixture ran out of users: raise `spare_users`")
    return server.users[server.next_user]


class FaultyProxy:
    """A TCP proxy in front of Dovecot that, on the n-th command containing `trigger`,
    forwards `after_bytes` of the answer and then hangs up (or stalls, sending nothing)."""

    def __init__(
        self,
        upstream_port: int,
        *,
        trigger: bytes = b"UID FETCH",
        nth: int = 1,
        after_bytes: int = 10_000,
        mode: str = "hangup",
    ) -> None:
        self.upstream_port = upstream_port
        self.trigger, self.nth, self.after_bytes, self.mode = trigger, nth, after_bytes, mode
        self.armed = True
        self.port = 0
        self._server: Any = None

    async def start(self) -> FaultyProxy:
        import asyncio

        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: Any, writer: Any) -> None:
        import asyncio

        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        state = {"seen": 0, "fault": False}

        async def client_to_server() -> None:
            while data := await reader.read(65536):
                if self.armed and self.trigger in data:
                    state["seen"] += 1
                    if state["seen"] == self.nth:
                        state["fault"] = True
                up_writer.write(data)
                await up_writer.drain()

        async def server_to_client() -> None:
            sent_after = 0
            while data := await up_reader.read(65536):
                if state["fault"]:
                    room = self.after_bytes - sent_after
                    if room <= 0 or self.mode == "stall":
                        if self.mode == "stall":
                            await asyncio.sleep(3600)
                        break
                    data = data[:room]
                    sent_after += len(data)
                writer.write(data)
                await writer.drain()
            writer.close()
            up_writer.close()

        tasks = [
            asyncio.ensure_future(client_to_server()),
            asyncio.ensure_future(server_to_client()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass  # the test's loop is closing
        finally:
            for t in tasks:
                t.cancel()
            writer.close()
            up_writer.close()
