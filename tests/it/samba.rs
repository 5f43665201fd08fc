//! A real Samba AD domain controller (Debian `samba`, `samba-ad-dc`) for the Active
//! Directory tests, in a network namespace of this test run's own: a DC wants ports 389,
//! 636 and 88, and must not meet anything else on the machine. One DC per test binary,
//! provisioned on first use (~8 s) and shared: tests keep to their own names.
//!
//! The DC dies with the test process (PR_SET_PDEATHSIG); a namespace left by an earlier,
//! killed run is removed when the next one starts. Samba's generated certificate has no
//! subject alternative name, so the DC gets a CA and a server certificate made here for
//! `dc1.example.test`, reached by its address with `tls_server_name`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const REALM: &str = "EXAMPLE.TEST";
pub const BASE: &str = "DC=example,DC=test";
pub const ADMIN_DN: &str = "CN=Administrator,CN=Users,DC=example,DC=test";
pub const ADMIN_PASSWORD: &str = "Adm1n-Pass!word";
pub const DC_NAME: &str = "dc1.example.test";
pub const LOCKOUT_THRESHOLD: u32 = 5;

pub struct Dc {
    pub ip: String,
    pub ca: PathBuf,
    dir: PathBuf,
}

static DC: OnceLock<Result<Dc, String>> = OnceLock::new();

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{cmd:?}: cannot start: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Namespaces of earlier runs whose process is gone.
fn remove_stale_namespaces() {
    let Ok(list) = run(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(pid) = name
            .strip_prefix("provd-ad-")
            .and_then(|p| p.parse::<u32>().ok())
            && !pid_alive(pid)
        {
            let _ = run(Command::new("ip").args(["netns", "del", name]));
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    run(Command::new("openssl").current_dir(dir).args(args)).map(|_| ())
}

impl Dc {
    /// The shared DC; the test fails with the reason if it cannot be had (no privilege to
    /// create a namespace, Samba missing): CI must not skip these silently.
    pub fn get() -> &'static Dc {
        match DC.get_or_init(Dc::start) {
            Ok(dc) => dc,
            Err(e) => panic!("the Samba AD DC could not be started: {e}"),
        }
    }

    fn start() -> Result<Dc, String> {
        remove_stale_namespaces();
        let pid = std::process::id();
        let ns = format!("provd-ad-{pid}");
        let (host_if, dc_if) = (
            format!("pad{}h", pid % 100_000),
            format!("pad{}d", pid % 100_000),
        );
        let net = format!("10.231.{}", pid % 250);
        let (host_ip, ip) = (format!("{net}.1"), format!("{net}.2"));
        let ipc = |args: &[&str]| run(Command::new("ip").args(args)).map(|_| ());
        ipc(&["netns", "add", &ns])
            .map_err(|e| format!("creating a network namespace needs root (CAP_SYS_ADMIN): {e}"))?;
        ipc(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &dc_if,
        ])?;
        ipc(&["link", "set", &dc_if, "netns", &ns])?;
        ipc(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        ipc(&["link", "set", &host_if, "up"])?;
        ipc(&[
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("{ip}/30"),
            "dev",
            &dc_if,
        ])?;
        ipc(&["netns", "exec", &ns, "ip", "link", "set", &dc_if, "up"])?;
        ipc(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;

        let dir = std::env::temp_dir().join(format!("provd-ad-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tls")).map_err(|e| e.to_string())?;
        let tls = dir.join("tls");
        openssl(
            &tls,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=provd test AD CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        )?;
        openssl(
            &tls,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={DC_NAME}"),
                "-keyout",
                "dc.key",
                "-out",
                "dc.csr",
            ],
        )?;
        std::fs::write(tls.join("ext"), format!("subjectAltName=DNS:{DC_NAME}\n"))
            .map_err(|e| e.to_string())?;
        openssl(
            &tls,
            &[
                "x509",
                "-req",
                "-in",
                "dc.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext",
                "-out",
                "dc.pem",
            ],
        )?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tls.join("dc.key"), std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;

        let target = dir.join("dc");
        run(Command::new("ip")
            .args(["netns", "exec", &ns, "samba-tool", "domain", "provision"])
            .arg(format!("--realm={REALM}"))
            .args([
                "--domain=EXAMPLE",
                "--server-role=dc",
                "--dns-backend=NONE",
                "--host-name=dc1",
            ])
            .arg(format!("--adminpass={ADMIN_PASSWORD}"))
            .arg(format!("--host-ip={ip}"))
            .arg(format!("--targetdir={}", target.display()))
            .arg(format!("--option=interfaces=lo {dc_if}"))
            .arg("--option=bind interfaces only=yes"))?;
        let sam = target.join("private/sam.ldb");
        run(Command::new("samba-tool")
            .args(["domain", "passwordsettings", "set", "-H"])
            .arg(&sam)
            .arg(format!("--account-lockout-threshold={LOCKOUT_THRESHOLD}"))
            .args([
                "--min-pwd-age=0",
                "--account-lockout-duration=30",
                "--reset-account-lockout-after=30",
            ]))?;
        let t = target.display();
        let conf = format!(
            "[global]\n\tnetbios name = DC1\n\trealm = {REALM}\n\tworkgroup = EXAMPLE\n\tserver role = active directory domain controller\n\
             \tserver services = ldap\n\tinterfaces = lo {dc_if}\n\tbind interfaces only = yes\n\
             \tprivate dir = {t}/private\n\tstate directory = {t}/state\n\tcache directory = {t}/cache\n\tlock directory = {t}\n\tpid directory = {t}\n\
             \tbinddns dir = {t}/bind-dns\n\tlog file = {t}/log.samba\n\tlogging = file\n\
             \ttls enabled = yes\n\ttls keyfile = {k}\n\ttls certfile = {c}\n\ttls cafile = {a}\n",
            k = tls.join("dc.key").display(),
            c = tls.join("dc.pem").display(),
            a = tls.join("ca.pem").display(),
        );
        std::fs::write(target.join("test.conf"), conf).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("samba.out")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &ns,
            "samba",
            "--foreground",
            "--no-process-group",
            "-s",
        ])
        .arg(target.join("test.conf"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl only sets this process's parent-death signal; it allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        // The parent-death signal fires when the *thread* that spawned the child ends, and
        // test threads end with their test: spawn from a thread that lives as long as the
        // test process.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let spawned = cmd
                .spawn()
                .map(|_child| ())
                .map_err(|e| format!("cannot start samba: {e}"));
            let _ = tx.send(spawned);
            loop {
                std::thread::park();
            }
        });
        rx.recv().map_err(|e| e.to_string())??;
        let dc = Dc {
            ip,
            ca: tls.join("ca.pem"),
            dir,
        };
        // LDAPS answers within seconds.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if dc.search(BASE, "base", "(objectClass=*)", &["dn"]).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let out = std::fs::read_to_string(dc.dir.join("samba.out")).unwrap_or_default();
                return Err(format!(
                    "samba did not answer on ldaps://{} within 60 s:\n{out}",
                    dc.ip
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        dc.modify(&format!(
            "dn: OU=Service,{BASE}\nchangetype: add\nobjectClass: organizationalUnit\n\n\
             dn: OU=Groups,{BASE}\nchangetype: add\nobjectClass: organizationalUnit\n"
        ))?;
        Ok(dc)
    }

    pub fn url(&self) -> String {
        format!("ldaps://{}", self.ip)
    }

    /// An OpenLDAP client tool bound as `who`.
    fn tool_as(&self, program: &str, who: &str, password: &str) -> Command {
        let mut c = Command::new(program);
        c.env("LDAPTLS_CACERT", &self.ca)
            // The test's own tools reach the DC by address; provd checks the name.
            .env("LDAPTLS_REQCERT", "never")
            .args(["-x", "-H", &self.url(), "-D", who, "-w", password]);
        c
    }

    fn tool(&self, program: &str) -> Command {
        self.tool_as(program, ADMIN_DN, ADMIN_PASSWORD)
    }

    /// `ldapmodify` as Administrator.
    pub fn modify(&self, ldif: &str) -> Result<(), String> {
        use std::io::Write;
        let mut child = self
            .tool("ldapmodify")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        if let Some(mut i) = child.stdin.take() {
            i.write_all(ldif.as_bytes()).map_err(|e| e.to_string())?;
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ldapmodify: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// `ldapsearch` as Administrator: (dn, attribute, value) triples.
    pub fn search(
        &self,
        base: &str,
        scope: &str,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<(String, String, String)>, String> {
        let out = run(self
            .tool("ldapsearch")
            .args([
                "-LLL",
                "-o",
                "ldif-wrap=no",
                "-b",
                base,
                "-s",
                scope,
                filter,
            ])
            .args(attrs))?;
        let mut rows = Vec::new();
        let mut dn = String::new();
        for line in out.lines() {
            if let Some(d) = line.strip_prefix("dn: ") {
                dn = d.to_string();
            } else if let Some((k, v)) = line.split_once(": ") {
                rows.push((
                    dn.clone(),
                    k.trim_end_matches(':').to_string(),
                    v.to_string(),
                ));
            }
        }
        Ok(rows)
    }

    /// One attribute's values on one entry.
    pub fn values(&self, dn: &str, attr: &str) -> Vec<String> {
        self.search(dn, "base", "(objectClass=*)", &[attr])
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, k, _)| k.eq_ignore_ascii_case(attr))
            .map(|(_, _, v)| v)
            .collect()
    }

    /// Entries under `base` matching `filter`.
    pub fn dns(&self, base: &str, filter: &str) -> Vec<String> {
        let mut dns = Vec::new();
        let out = run(self.tool("ldapsearch").args([
            "-LLL",
            "-o",
            "ldif-wrap=no",
            "-b",
            base,
            "-s",
            "sub",
            filter,
            "1.1",
        ]))
        .unwrap_or_default();
        for line in out.lines() {
            if let Some(d) = line.strip_prefix("dn: ") {
                dns.push(d.to_string());
            }
        }
        dns.sort();
        dns.dedup();
        dns
    }

    /// Makes an OU for one test (tests share the DC and keep to their own OUs).
    pub fn ou(&self, name: &str) -> String {
        let dn = format!("OU={name},{BASE}");
        let _ = self.modify(&format!(
            "dn: {dn}\nchangetype: add\nobjectClass: organizationalUnit\n"
        ));
        dn
    }

    /// A group in `ou`.
    pub fn group(&self, name: &str, ou: &str) -> String {
        let dn = format!("CN={name},{ou}");
        let _ = self.modify(&format!(
            "dn: {dn}\nchangetype: add\nobjectClass: group\nsAMAccountName: {name}\n"
        ));
        dn
    }

    /// A user with a password, enabled (a service account, or one made by hand).
    pub fn user(&self, dn: &str, sam: &str, password: &str) {
        let pw: Vec<u8> = format!("\"{password}\"")
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let b64 = base64(&pw);
        self.modify(&format!(
            "dn: {dn}\nchangetype: add\nobjectClass: user\nsAMAccountName: {sam}\nuserPrincipalName: {sam}@example.test\n\n\
             dn: {dn}\nchangetype: modify\nreplace: unicodePwd\nunicodePwd:: {b64}\n-\nreplace: userAccountControl\nuserAccountControl: 512\n"
        ))
        .unwrap();
    }

    /// A service account that may manage `ou` only (full control there, inherited by what
    /// is below), as an AD administrator delegates one; its DN.
    pub fn delegated(&self, sam: &str, password: &str, ou: &str) -> String {
        let dn = format!("CN={sam},OU=Service,{BASE}");
        self.user(&dn, sam, password);
        let db = self.dir.join("dc/private/sam.ldb");
        let shown = run(Command::new("samba-tool")
            .args(["user", "show", sam, "--attributes=objectSid", "-H"])
            .arg(&db))
        .unwrap();
        let sid = shown
            .lines()
            .find_map(|l| l.strip_prefix("objectSid: "))
            .unwrap_or_else(|| panic!("no objectSid in {shown}"))
            .trim()
            .to_string();
        run(Command::new("samba-tool")
            .args(["dsacl", "set", "-H"])
            .arg(&db)
            .arg(format!("--objectdn={ou}"))
            .arg(format!("--sddl=(A;CI;RPWPCRCCDCLCLORCWOWDSDDTSW;;;{sid})")))
        .unwrap();
        dn
    }

    /// A simple bind as `who` with `password`: Ok, or the server's diagnostic (AD's
    /// `data 773` = must change the password, `52e` = wrong password, `775` = locked).
    pub fn bind(&self, who: &str, password: &str) -> Result<(), String> {
        // (Samba has no WhoAmI extended operation: a base search of the root DSE binds.)
        let out = self
            .tool_as("ldapsearch", who, password)
            .args(["-b", "", "-s", "base", "1.1"])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
