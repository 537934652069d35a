"""A throw-away OpenLDAP server (Debian's slapd) on a free loopback port, its database in a temporary
folder, loaded with ldap-utils' ldapadd. Used by the directory tests' fixture."""
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SLAPD = "/usr/sbin/slapd"
SUFFIX = "dc=hospital,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "root-secret"
CONF = """include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {dir}/slapd.pid
database mdb
maxsize 16777216
suffix "{suffix}"
rootdn "{root_dn}"
rootpw {root_pw}
directory {dir}/db
"""
TLS_CONF = """TLSCertificateFile {dir}/cert.pem
TLSCertificateKeyFile {dir}/key.pem
"""


@dataclass
class Slapd:
    uri: str  # ldap:// (StartTLS offered)
    ldaps_uri: str  # TLS from the start
    ca_file: Path  # the certificate the server presents (self-signed: its own CA)
    process: subprocess.Popen

    def ldap(self, tool: str, ldif: str) -> None:
        """ldapadd / ldapmodify / ldapdelete as the directory's administrator, with ``ldif`` on stdin."""
        subprocess.run([tool, "-x", "-H", self.uri, "-D", ROOT_DN, "-w", ROOT_PW], input=ldif, text=True,
                       check=True, capture_output=True, timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slapd_start(folder: Path, fixtures: Path) -> Slapd:
    missing = [tool for tool in (SLAPD, "ldapadd", "openssl") if not shutil.which(tool)]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not installed: `make test` installs Debian's slapd and ldap-utils")
    (folder / "db").mkdir(parents=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(folder / "key.pem"),
                    "-out", str(folder / "cert.pem")], check=True, capture_output=True, timeout=60)
    conf = folder / "slapd.conf"
    conf.write_text(TLS_CONF.format(dir=folder) + CONF.format(dir=folder, suffix=SUFFIX, root_dn=ROOT_DN,
                                                               root_pw=ROOT_PW))
    uri, ldaps_uri = f"ldap://127.0.0.1:{_free_port()}/", f"ldaps://127.0.0.1:{_free_port()}/"
    log = (folder / "slapd.log").open("w")
    proc = subprocess.Popen([SLAPD, "-f", str(conf), "-h", f"{uri} {ldaps_uri}", "-d", "0"], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    server = Slapd(uri, ldaps_uri, folder / "cert.pem", proc)
    deadline = time.time() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError("slapd exited:\n" + (folder / "slapd.log").read_text())
        try:
            server.ldap("ldapadd", fixtures.read_text())
            return server
        except subprocess.CalledProcessError as exc:
            if time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"slapd did not take the fixtures: {exc.stderr}") from exc
            time.sleep(0.2)


def slapd_stop(server: Slapd) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)
