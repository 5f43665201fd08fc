//! A throwaway OpenLDAP `slapd` per test (recipe: shared/test-servers.md): mdb backend in a
//! temp dir, a free port on 127.0.0.1, optional StartTLS/ldaps with a test CA made by
//! openssl. Killed on drop; can be stopped and started again on the same port and data.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use ldap3::{LdapConnAsync, Scope, SearchEntry};

use crate::harness::{eventually, free_port};

pub const BASE: &str = "dc=example,dc=com";
pub const ADMIN: &str = "cn=admin,dc=example,dc=com";
pub const PASSWORD: &str = "s3cret-Bind-Pw";

const SEED: &str = "dn: dc=example,dc=com
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,dc=example,dc=com
objectClass: organizationalUnit
ou: people

dn: ou=disabled,dc=example,dc=com
objectClass: organizationalUnit
ou: disabled

dn: ou=groups,dc=example,dc=com
objectClass: organizationalUnit
ou: groups

dn: cn=vpn,ou=groups,dc=example,dc=com
objectClass: groupOfNames
cn: vpn
member: cn=admin,dc=example,dc=com

dn: cn=git,ou=groups,dc=example,dc=com
objectClass: groupOfNames
cn: git
member: cn=admin,dc=example,dc=com

dn: cn=solo,ou=groups,dc=example,dc=com
objectClass: groupOfNames
cn: solo
member: uid=ada,ou=people,dc=example,dc=com

dn: cn=uniq,ou=groups,dc=example,dc=com
objectClass: groupOfUniqueNames
cn: uniq
uniqueMember: cn=admin,dc=example,dc=com

dn: cn=staff,ou=groups,dc=example,dc=com
objectClass: posixGroup
cn: staff
gidNumber: 5000
";

pub struct Certs {
    pub ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 / localhost.
pub fn make_certs(dir: &Path) -> Certs {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=provd test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
    Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

pub struct Slapd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub tls_port: u16,
    pub certs: Option<Certs>,
    child: Option<Child>,
}

impl Slapd {
    pub async fn start() -> Slapd {
        Self::start_with(false).await
    }

    pub async fn start_tls() -> Slapd {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> Slapd {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("db")).unwrap();
        let certs = tls.then(|| make_certs(dir.path()));
        let tls_conf = certs
            .as_ref()
            .map(|c| {
                format!(
                    "TLSCACertificateFile {}\nTLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                    c.ca.display(),
                    c.cert.display(),
                    c.key.display()
                )
            })
            .unwrap_or_default();
        let d = dir.path().display();
        let hash = Command::new("slappasswd")
            .args(["-s", PASSWORD])
            .output()
            .unwrap();
        let hash = String::from_utf8(hash.stdout).unwrap();
        std::fs::write(
            dir.path().join("slapd.conf"),
            format!(
                "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\ninclude /etc/ldap/schema/inetorgperson.schema\ninclude /etc/ldap/schema/nis.schema\n\
                 modulepath /usr/lib/ldap\nmoduleload back_mdb\npidfile {d}/slapd.pid\nargsfile {d}/slapd.args\n{tls_conf}\
                 database mdb\nmaxsize 67108864\nsuffix \"{BASE}\"\nrootdn \"{ADMIN}\"\nrootpw {}\ndirectory {d}/db\nindex objectClass,uid,member eq\n",
                hash.trim()
            ),
        )
        .unwrap();
        let mut s = Slapd {
            dir,
            port: free_port(),
            tls_port: free_port(),
            certs,
            child: None,
        };
        s.run().await;
        s.ldapadd(SEED);
        s
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port)
    }

    async fn run(&mut self) {
        let mut urls = format!("ldap://127.0.0.1:{}/", self.port);
        if self.certs.is_some() {
            urls.push_str(&format!(" ldaps://127.0.0.1:{}/", self.tls_port));
        }
        let log = std::fs::File::create(self.dir.path().join("slapd.log")).unwrap();
        let child = Command::new("/usr/sbin/slapd")
            .args(["-h", &urls, "-f"])
            .arg(self.dir.path().join("slapd.conf"))
            .args(["-d", "0"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let url = self.url();
        eventually(10, "slapd to answer", || {
            let ok = Command::new("ldapwhoami")
                .args(["-x", "-H", &url, "-D", ADMIN, "-w", PASSWORD])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            async move { ok.then_some(()) }
        })
        .await;
    }

    /// SIGKILL: the server is gone at once, as if the host died.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.run().await;
    }

    pub fn ldapadd(&self, ldif: &str) {
        self.ldap_cli("ldapadd", ldif);
    }

    fn ldap_cli(&self, tool: &str, ldif: &str) {
        use std::io::Write;
        let mut child = Command::new(tool)
            .args(["-x", "-H", &self.url(), "-D", ADMIN, "-w", PASSWORD])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Entries matching `filter` under `base`, with all their attributes.
    pub async fn search(&self, base: &str, filter: &str) -> Vec<SearchEntry> {
        let (conn, mut ldap) = LdapConnAsync::new(&self.url()).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.drive().await;
        });
        ldap.simple_bind(ADMIN, PASSWORD)
            .await
            .unwrap()
            .success()
            .unwrap();
        let (entries, _) = ldap
            .search(base, Scope::Subtree, filter, vec!["*"])
            .await
            .unwrap()
            .success()
            .unwrap();
        let _ = ldap.unbind().await;
        entries.into_iter().map(SearchEntry::construct).collect()
    }

    /// The values of `attr` on the entry at `dn` (empty if the entry or attribute is absent).
    pub async fn values(&self, dn: &str, attr: &str) -> Vec<String> {
        let (conn, mut ldap) = LdapConnAsync::new(&self.url()).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.drive().await;
        });
        ldap.simple_bind(ADMIN, PASSWORD)
            .await
            .unwrap()
            .success()
            .unwrap();
        let r = ldap
            .search(dn, Scope::Base, "(objectClass=*)", vec![attr])
            .await
            .unwrap();
        let _ = ldap.unbind().await;
        let mut out: Vec<String> =
            r.0.into_iter()
                .map(SearchEntry::construct)
                .flat_map(|e| e.attrs.get(attr).cloned().unwrap_or_default())
                .collect();
        out.sort();
        out
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
