"""The bridge driven by real mail programs: swaks (SMTP), neomutt headless in tmux, fetchmail (IMAP).

Each test skips, saying which binary is missing, when its program is not installed
(``scripts/bootstrap.sh`` installs them as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.parse
from email.message import EmailMessage

import pytest

from tests.network.bridge.harness import BridgeNet, find as _find, submit as _submit, wait_for

pytestmark = [pytest.mark.network, pytest.mark.slow]


def need(*binaries: str) -> None:
    """Skip the test, naming what is missing, unless every binary is on PATH."""
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (as root: apt-get install {' '.join(missing)}; "
                    "scripts/bootstrap.sh does it)")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with BridgeNet(tmp_path_factory.mktemp("bridge-programs")) as running:
        yield running


def test_swaks_sends_a_mail_with_an_attachment(net, tmp_path):
    need("swaks")
    alice, bob = net.users["alice"], net.users["bob"]
    blob = os.urandom(20000)
    (tmp_path / "data.bin").write_bytes(blob)
    result = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(alice.smtp_port), "--auth", "LOGIN",
         "--auth-user", alice.address, "--auth-password", alice.password, "--from", alice.address,
         "--to", "bob@petname.anonmail", "--header", "Subject: sent with swaks", "--body", "see attachment",
         "--attach-type", "application/octet-stream", "--attach-name", "data.bin", "--attach",
         f"@{tmp_path / 'data.bin'}"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    got = wait_for(lambda: _find(bob, "sent with swaks"), what="swaks' mail in Bob's INBOX")
    [attachment] = list(got.iter_attachments())
    assert attachment.get_payload(decode=True) == blob


def test_swaks_sees_the_rcpt_refusal(net):
    need("swaks")
    alice = net.users["alice"]
    result = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(alice.smtp_port), "--auth", "PLAIN",
         "--auth-user", alice.address, "--auth-password", alice.password, "--from", alice.address,
         "--to", "nobody@petname.anonmail"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "550 5.1.1 unknown contact 'nobody'" in result.stdout


def test_fetchmail_pulls_the_inbox(net, tmp_path):
    need("fetchmail")
    alice, bob = net.users["alice"], net.users["bob"]
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = alice.address, "bob@petname.anonmail", "for fetchmail"
    m.set_content("fetch me\n")
    _submit(alice, m)
    wait_for(lambda: _find(bob, "for fetchmail"), what="the mail for fetchmail")
    out = tmp_path / "pulled.mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f'poll 127.0.0.1 service {bob.imap_port} protocol IMAP auth password\n'
        f'  user "{bob.address}" password "{bob.password}" is "{os.environ.get("USER", "root")}" here\n'
        f'  keep fetchall sslproto "" mda "/bin/sh -c \'cat >> {out}\'"\n')
    rc.chmod(0o600)
    env = dict(os.environ, FETCHMAILHOME=str(tmp_path), HOME=str(tmp_path))
    result = subprocess.run(["fetchmail", "-f", str(rc), "--nodetach", "-v"], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    pulled = out.read_bytes()
    assert b"Subject: for fetchmail" in pulled and b"fetch me" in pulled
    assert f"X-Anonmail-Sender: alice <{alice.address}>".encode() in pulled
    store = bob.store()  # `keep`: still there for the CLI and other clients
    assert any(m.subject == "for fetchmail" for m in store.inbox())
    store.close()


def _muttrc(path, user, home) -> None:
    quoted = urllib.parse.quote(user.address, safe="")
    path.write_text(f"""
set folder = "imap://{quoted}@127.0.0.1:{user.imap_port}/"
set spoolfile = "+INBOX"
set imap_user = "{user.address}"
set imap_pass = "{user.password}"
set smtp_url = "smtp://{quoted}@127.0.0.1:{user.smtp_port}/"
set smtp_pass = "{user.password}"
set from = "{user.address}"
set real_name = "{user.name}"
set use_from = yes
set record = ""
set ssl_starttls = no
set ssl_force_tls = no
set header_cache = "{home}/hcache"
set message_cachedir = "{home}/mcache"
set imap_check_subscribed = no
set mail_check = 1
set timeout = 1
set sort = date
set pager_stop = yes
set confirmappend = no
set wait_key = no
""")


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30, check=True).stdout


def test_neomutt_sends_an_attachment_and_reads_the_reply(net, tmp_path):
    need("neomutt", "tmux")
    alice, bob = net.users["alice"], net.users["bob"]
    home = tmp_path / "mutt"
    home.mkdir()
    rc = home / "muttrc"
    _muttrc(rc, alice, home)
    attachment = home / "notes.txt"
    attachment.write_text("notes from neomutt\n" * 50)
    env = dict(os.environ, HOME=str(home), TERM="xterm")
    sent = subprocess.run(["neomutt", "-n", "-F", str(rc), "-s", "from neomutt", "-a", str(attachment), "--",
                           "bob@petname.anonmail"], input="written in neomutt\n", capture_output=True, text=True,
                          timeout=120, env=env)
    assert sent.returncode == 0, sent.stdout[-2000:] + sent.stderr[-2000:]
    got = wait_for(lambda: _find(bob, "from neomutt"), what="neomutt's mail in Bob's INBOX")
    [part] = list(got.iter_attachments())
    assert part.get_filename() == "notes.txt"
    assert part.get_content().replace("\r\n", "\n") == attachment.read_text()  # text travels in CRLF form

    reply = EmailMessage()
    reply["From"], reply["To"], reply["Subject"] = bob.address, alice.address, "Re: from neomutt"
    reply["In-Reply-To"] = got["Message-ID"]
    reply.set_content("bob read your notes\n")
    _submit(bob, reply)
    wait_for(lambda: _find(alice, "Re: from neomutt"), what="Bob's reply in Alice's INBOX")

    session = f"anonmail-bridge-{os.getpid()}"
    _tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "40", "-e", f"HOME={home}", "-e", "TERM=xterm",
          f"neomutt -n -F {rc}")
    try:
        wait_for(lambda: "Re: from neo" in _tmux("capture-pane", "-p", "-t", session), timeout=60, step=0.5,
                 what="the reply in neomutt's index")
        _tmux("send-keys", "-t", session, "/", "Re: from neomutt", "Enter")  # search, then open it
        time.sleep(1)
        _tmux("send-keys", "-t", session, "Enter")
        wait_for(lambda: "bob read your notes" in _tmux("capture-pane", "-p", "-t", session), timeout=30,
                 step=0.5, what="the reply's text in neomutt's pager")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, timeout=30)
