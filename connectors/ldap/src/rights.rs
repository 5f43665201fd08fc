//! AD: before provd links an account it did not make, it asks the DC what its service
//! account may write there (`allowedAttributesEffective`, computed per entry for the
//! binder). An account it may not manage, linked anyway, broke later and half-way: a
//! leaver's job took a group away, then failed on `userAccountControl`
//! (insufficientAccessRights, 50) and the person stayed enabled (issue 34, item 7).

use provd_connector_core::ConnectorError;

use crate::LdapConnector;
use crate::account::read;

/// What provd writes on an AD account it links: the disable and enable bit.
const WRITES: [&str; 1] = ["userAccountControl"];

/// The attributes of `need` missing from `allowed` (case-insensitive).
pub fn missing<'a>(need: &[&'a str], allowed: &[String]) -> Vec<&'a str> {
    need.iter()
        .filter(|n| !allowed.iter().any(|a| a.eq_ignore_ascii_case(n)))
        .copied()
        .collect()
}

impl LdapConnector {
    /// Refuses, permanently and naming the entry and the attributes, to link `dn` when
    /// the service account may not write what provd writes there.
    pub(crate) async fn may_manage(&self, dn: &str) -> Result<(), ConnectorError> {
        let dn = dn.to_string();
        let allowed: Vec<String> = self
            .run("read rights", |mut ldap| {
                let dn = dn.clone();
                async move {
                    let e = read(&mut ldap, &dn, vec!["allowedAttributesEffective"]).await?;
                    Ok(e.map(|e| {
                        e.attrs
                            .into_iter()
                            .filter(|(k, _)| k.eq_ignore_ascii_case("allowedAttributesEffective"))
                            .flat_map(|(_, v)| v)
                            .collect()
                    })
                    .unwrap_or_default())
                }
            })
            .await?;
        let lacking = missing(&WRITES, &allowed);
        if lacking.is_empty() {
            return Ok(());
        }
        Err(ConnectorError::permanent(
            Some("50".into()),
            format!(
                "{dn} exists but provd's service account may not write {} there \
                 (allowedAttributesEffective): not linked; delegate those rights on its OU, or move the account where provd manages accounts",
                lacking.join(", ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_are_compared_without_case() {
        let allowed = vec!["cn".to_string(), "useraccountcontrol".to_string()];
        assert!(missing(&WRITES, &allowed).is_empty());
        assert_eq!(
            missing(&WRITES, &["cn".to_string()]),
            ["userAccountControl"]
        );
    }
}
