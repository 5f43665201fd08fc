//! Active Directory's own rules (`directory = "ad"`, DESIGN §20): account control bits,
//! `sAMAccountName`, and initial passwords — generated, set as AD wants them, and handed
//! to a delivery command without ever being logged, stored or shown.

use std::time::Duration;

use provd_connector_core::Identity;
use provd_connector_core::template;
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::AsyncWriteExt;

/// `userAccountControl` bits provd touches.
pub const ACCOUNTDISABLE: u32 = 0x2;
pub const PASSWD_NOTREQD: u32 = 0x20;

/// Enabled: ACCOUNTDISABLE off; with a password set, PASSWD_NOTREQD off too. Every other
/// bit (DONT_EXPIRE_PASSWORD, SMARTCARD_REQUIRED, …) is kept as it is.
pub fn enabled(uac: u32, password_set: bool) -> u32 {
    let uac = uac & !ACCOUNTDISABLE;
    if password_set {
        uac & !PASSWD_NOTREQD
    } else {
        uac
    }
}

/// AD's refusal of a password by its policy (history, complexity, a name in it): a
/// constraint violation (19) whose text carries `0000052D`.
pub fn policy_refused(message: &str) -> bool {
    message.to_ascii_uppercase().contains("0000052D")
}

pub fn disabled(uac: u32) -> u32 {
    uac | ACCOUNTDISABLE
}

/// Characters AD refuses in a `sAMAccountName`.
const SAM_FORBIDDEN: &str = "\"/\\[]:;|=,+*?<>";

/// AD's rules for a `sAMAccountName`, checked before anything is written (AD would refuse
/// `j+smith` only after the entry's other attributes were prepared, with a vaguer answer).
pub fn check_sam(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("sAMAccountName is empty".into());
    }
    let n = value.chars().count();
    if n > 20 {
        return Err(format!(
            "sAMAccountName `{value}` is {n} characters; AD allows at most 20"
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| SAM_FORBIDDEN.contains(*c) || c.is_control())
    {
        return Err(format!(
            "sAMAccountName `{value}` contains `{}`; AD refuses any of \" / \\ [ ] : ; | = , + * ? < > and control characters",
            c.escape_default()
        ));
    }
    if value.ends_with('.') {
        return Err(format!(
            "sAMAccountName `{value}` ends with a period, which AD refuses"
        ));
    }
    Ok(())
}

const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
const DIGITS: &[u8] = b"23456789";
const SYMBOLS: &[u8] = b"-_.!#%+=@";

/// A uniform index below `n` from the CSPRNG (rejection sampling: no modulo bias).
fn index(rng: &SystemRandom, n: usize) -> Result<usize, String> {
    let n = n as u32;
    let zone = u32::MAX - u32::MAX % n;
    loop {
        let mut b = [0u8; 4];
        rng.fill(&mut b)
            .map_err(|_| "the system's random source failed".to_string())?;
        let v = u32::from_le_bytes(b);
        if v < zone {
            return Ok((v % n) as usize);
        }
    }
}

/// A random password of `len` characters with at least one of each class (AD's
/// complexity wants three of four), from the operating system's CSPRNG, and not
/// containing the account name (AD refuses that).
pub fn random_password(len: usize, account: &str) -> Result<SecretString, String> {
    let rng = SystemRandom::new();
    let classes = [UPPER, LOWER, DIGITS, SYMBOLS];
    let all: Vec<u8> = classes.concat();
    for _ in 0..16 {
        let mut chars: Vec<u8> = Vec::with_capacity(len.max(4));
        for class in classes {
            chars.push(class[index(&rng, class.len())?]);
        }
        while chars.len() < len {
            chars.push(all[index(&rng, all.len())?]);
        }
        // Fisher–Yates, so that the classes are not in fixed places.
        for i in (1..chars.len()).rev() {
            chars.swap(i, index(&rng, i + 1)?);
        }
        let pw = String::from_utf8(chars).map_err(|e| e.to_string())?;
        if account.chars().count() < 3 || !pw.to_lowercase().contains(&account.to_lowercase()) {
            return Ok(SecretString::from(pw));
        }
    }
    Err("could not make a password that avoids the account name".into())
}

/// `unicodePwd`'s value: the password in double quotes, UTF-16LE (MS-ADTS 3.1.1.3.1.5).
pub fn unicode_pwd(password: &SecretString) -> Vec<u8> {
    format!("\"{}\"", password.expose_secret())
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// How long a delivery command may take.
pub const DELIVER_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a delivery goes, for the command's environment.
pub struct Delivery<'a> {
    pub command: &'a [String],
    pub identity: &'a Identity,
    pub source: &'a str,
    pub dn: &'a str,
}

/// Runs the delivery command: the password and a newline on standard input,
/// `PROVD_IDENTITY`, `PROVD_SOURCE` and `PROVD_ACCOUNT_DN` in its environment; exit 0 =
/// delivered. What it prints on failure is returned with the password scrubbed out.
pub async fn deliver(d: &Delivery<'_>, password: &SecretString) -> Result<(), String> {
    let mut args = Vec::with_capacity(d.command.len());
    for a in d.command {
        args.push(template::fill(a, d.identity, template::verbatim).map_err(|e| e.to_string())?);
    }
    let Some((program, rest)) = args.split_first() else {
        return Err("deliver_command names no program".into());
    };
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .env("PROVD_IDENTITY", &d.identity.id)
        .env("PROVD_SOURCE", d.source)
        .env("PROVD_ACCOUNT_DN", d.dn)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start `{program}`: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let line = format!("{}\n", password.expose_secret());
        // A command that exits without reading is judged by its exit status.
        let _ = stdin.write_all(line.as_bytes()).await;
    }
    let out = match tokio::time::timeout(DELIVER_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("`{program}` failed: {e}")),
        Err(_) => {
            return Err(format!(
                "`{program}` did not finish within {}s",
                DELIVER_TIMEOUT.as_secs()
            ));
        }
    };
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let said = provd_connector_core::redact::scrub(&said, password.expose_secret());
    Err(format!(
        "`{program}` exited with {}{}",
        out.status,
        if said.is_empty() {
            String::new()
        } else {
            format!(": {}", provd_connector_core::redact::cap_to(&said, 300))
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_policy_refusal_is_told_by_its_code() {
        // Samba's and Windows' texts for a password the policy refuses.
        assert!(policy_refused(
            "set new password: constraintViolation (19): 0000052D: Constraint violation - check_password_restrictions: the password does not meet the complexity criteria!"
        ));
        assert!(policy_refused("0000052d: AtrErr: DSID-03190F80"));
        assert!(!policy_refused(
            "set new password: constraintViolation (19): 00002082: attribute value exists"
        ));
    }

    #[test]
    fn only_the_disable_and_password_not_required_bits_change() {
        // NORMAL_ACCOUNT | ACCOUNTDISABLE | PASSWD_NOTREQD | DONT_EXPIRE_PASSWORD
        let uac = 0x200 | 0x2 | 0x20 | 0x10000;
        assert_eq!(enabled(uac, true), 0x200 | 0x10000);
        assert_eq!(enabled(uac, false), 0x200 | 0x20 | 0x10000);
        assert_eq!(disabled(0x200 | 0x10000), 0x200 | 0x2 | 0x10000);
        assert_eq!(disabled(disabled(0x200)), 0x202);
    }

    #[test]
    fn sam_account_name_rules() {
        assert!(check_sam("ada").is_ok());
        assert!(check_sam("a.lovelace-1_x").is_ok());
        assert!(check_sam("abcdefghijklmnopqrst").is_ok());
        let e = check_sam("abcdefghijklmnopqrstu").unwrap_err();
        assert!(e.contains("at most 20"), "{e}");
        for bad in [
            "j+smith", "a/b", "a\\b", "x,y", "q?", "<a>", "a\"b", "a;b", "a|b", "a=b", "a*b",
            "[a]", "a:b",
        ] {
            let e = check_sam(bad).unwrap_err();
            assert!(e.contains("AD refuses"), "{bad}: {e}");
        }
        assert!(check_sam("").is_err());
        assert!(check_sam("ada.").is_err());
    }

    #[test]
    fn random_passwords_meet_complexity_and_differ() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let p = random_password(20, "ada").unwrap();
            let s = p.expose_secret();
            assert_eq!(s.chars().count(), 20);
            assert!(s.bytes().any(|b| b.is_ascii_uppercase()), "{s}");
            assert!(s.bytes().any(|b| b.is_ascii_lowercase()), "{s}");
            assert!(s.bytes().any(|b| b.is_ascii_digit()), "{s}");
            assert!(s.bytes().any(|b| SYMBOLS.contains(&b)), "{s}");
            assert!(!s.to_lowercase().contains("ada"));
            assert!(seen.insert(s.to_string()));
        }
        assert_eq!(random_password(14, "x").unwrap().expose_secret().len(), 14);
    }

    #[test]
    fn unicode_pwd_is_quoted_utf16le() {
        let v = unicode_pwd(&SecretString::from("Aé1".to_string()));
        assert_eq!(v, [0x22, 0, 0x41, 0, 0xe9, 0, 0x31, 0, 0x22, 0]);
    }

    #[tokio::test]
    async fn delivery_gets_the_password_on_stdin_and_its_failures_never_show_it() {
        let dir = std::env::temp_dir().join(format!("provd-deliver-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("got");
        let identity = Identity {
            id: "ada".into(),
            attributes: Default::default(),
        };
        let ok = vec![
            "sh".to_string(),
            "-c".to_string(),
            format!(
                "cat > {} && echo \"$PROVD_IDENTITY $PROVD_SOURCE $PROVD_ACCOUNT_DN $1\" >> {}",
                out.display(),
                out.display()
            ),
            "sh".to_string(),
            "{id}".to_string(),
        ];
        let pw = SecretString::from("S3cret-pw-xyz".to_string());
        let d = Delivery {
            command: &ok,
            identity: &identity,
            source: "corp-ad",
            dn: "CN=Ada,DC=x",
        };
        deliver(&d, &pw).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "S3cret-pw-xyz\nada corp-ad CN=Ada,DC=x ada\n"
        );
        let bad = vec![
            "sh".to_string(),
            "-c".to_string(),
            "read p; echo \"cannot send $p\" >&2; exit 3".to_string(),
        ];
        let d = Delivery {
            command: &bad,
            identity: &identity,
            source: "corp-ad",
            dn: "CN=Ada,DC=x",
        };
        let e = deliver(&d, &pw).await.unwrap_err();
        assert!(
            e.contains("exit status: 3") && e.contains("cannot send"),
            "{e}"
        );
        assert!(!e.contains("S3cret-pw-xyz"), "{e}");
    }
}
