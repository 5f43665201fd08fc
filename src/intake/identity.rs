//! Which provd identity an outside system means: an id it sends, matched against one
//! identity attribute (upstream pulls and SailPoint triggers alike). Imported identities
//! take precedence over identities.csv, as everywhere.

use crate::config::Config;
use crate::store::StoreError;
use crate::store::roles::Accounts;

/// The id of the identity whose `attribute` is `external` (`id`: the id itself), if any.
pub async fn resolve(
    store: &dyn Accounts,
    config: &Config,
    attribute: &str,
    external: &str,
) -> Result<Option<String>, StoreError> {
    if attribute == "id" {
        let known = config.identities.contains_key(external)
            || store.identity(external.to_string()).await?.is_some();
        return Ok(known.then(|| external.to_string()));
    }
    if let Some(id) = store
        .identity_by_attribute(attribute.to_string(), external.to_string())
        .await?
    {
        return Ok(Some(id));
    }
    Ok(config
        .identities
        .values()
        .find(|i| i.attributes.get(attribute).map(String::as_str) == Some(external))
        .map(|i| i.id.clone()))
}
